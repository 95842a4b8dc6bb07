//! Number formatting shared by the text outputs.

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn trim_float(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Width of a table's first column: its longest entry, at least the header's `min`.
pub fn column_width<'a>(entries: impl Iterator<Item = &'a str>, min: usize) -> usize {
    entries.map(str::len).max().unwrap_or(min).max(min)
}

/// How many modules the default (non `--table`) report lists under each heading.
pub const ATTENTION: usize = 5;

/// The `n` items with the largest `key` (NaN last), largest first.
pub fn largest_by<T>(items: &[T], n: usize, key: impl Fn(&T) -> f64) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.partial_cmp(&ka)
            .unwrap_or_else(|| ka.is_nan().cmp(&kb.is_nan()))
    });
    v.truncate(n);
    v
}
