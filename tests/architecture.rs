//! The layering ARCHITECTURE.md promises, checked on the source: every `crate::` / `super::`
//! path a module uses (outside its tests) points down the layer order, and no two modules
//! depend on each other, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer: a module may use modules of lower rank only.
const RANKS: &[(&str, u32)] = &[
    ("cli", 6),
    ("app", 5),
    ("ops", 4),
    ("registry", 4),
    ("remote", 4),
    ("adapter", 3),
    ("io", 1),
    ("quant", 1),
    ("linalg", 1),
    ("formats", 1),
    ("tensor", 0),
    ("error", 0),
    ("named", 0),
    ("testing", 7),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `["a", "b"]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let is_mod = matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    );
    if is_mod {
        parts.pop();
    }
    parts
}

/// The module paths a file refers to through `crate::` and `super::`, outside `#[cfg(test)]`.
fn references(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = Vec::new();
    for (i, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i..];
        let segs: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|s| !s.is_empty())
            .collect();
        let mut path: Vec<String> = Vec::new();
        let mut it = segs.into_iter().peekable();
        match it.next() {
            Some("crate") => {}
            Some("super") => {
                // `super` of `a::b` is `a`, whether b is `a/b.rs` or `a/b/mod.rs`
                path = me.to_vec();
                path.pop();
                while it.peek() == Some(&"super") {
                    it.next();
                    path.pop();
                }
            }
            _ => continue,
        }
        path.extend(it.map(str::to_string));
        out.push(path);
    }
    out
}

#[test]
fn modules_depend_only_downwards_and_never_on_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    // test-only modules (`#[cfg(test)] mod test_util;`) are tests, not layers
    let test_only: Vec<Vec<String>> = modules
        .keys()
        .filter(|m| {
            let Some((name, parent)) = m.split_last() else {
                return false;
            };
            let decl = regex::Regex::new(&format!(
                r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod {name};"
            ))
            .expect("pattern");
            modules
                .get(parent)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .is_some_and(|t| decl.is_match(&t))
        })
        .cloned()
        .collect();
    for m in &test_only {
        modules.remove(m);
    }
    let rank: BTreeMap<&str, u32> = RANKS.iter().copied().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut upward = Vec::new();
    for (me, file) in &modules {
        let text = std::fs::read_to_string(file).expect("readable");
        for mut target in references(&text, me) {
            // the longest prefix that is a module
            while !target.is_empty() && !modules.contains_key(&target) {
                target.pop();
            }
            if target.is_empty() || target == *me || me.starts_with(&target) {
                continue;
            }
            let (Some(a), Some(b)) = (me.first(), target.first()) else {
                continue;
            };
            if a != b {
                let (ra, rb) = (rank.get(a.as_str()), rank.get(b.as_str()));
                assert!(ra.is_some(), "{a} has no layer in RANKS");
                assert!(rb.is_some(), "{b} has no layer in RANKS");
                if rb > ra {
                    upward.push(format!("{} -> {}", me.join("::"), target.join("::")));
                }
            }
            edges.entry(me.clone()).or_default().insert(target);
        }
    }
    assert!(
        upward.is_empty(),
        "uses against the layer order: {upward:#?}"
    );
    // a cycle: some module reaches itself
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = edges[start].iter().collect();
        while let Some(m) = stack.pop() {
            assert!(
                m != start,
                "{} depends on itself through other modules",
                start.join("::")
            );
            if seen.insert(m) {
                if let Some(next) = edges.get(m) {
                    stack.extend(next.iter());
                }
            }
        }
    }
}
