//! Stable Diffusion module tables (`formats/sd15.tsv`, `formats/sdxl.tsv`): every module a
//! kohya LoRA can target, with its canonical diffusers path, kohya name, kind, base weight
//! shape and single-file checkpoint name. kohya names are lossy (`.` became `_`), so they
//! are resolved only through these tables, never by string surgery.

use super::LayerKind;
use std::collections::HashMap;
use std::sync::OnceLock;

pub const FAMILIES: [&str; 2] = ["sd15", "sdxl"];

#[derive(Debug, Clone)]
pub struct ModuleRow {
    pub canonical: String,
    pub kohya: String,
    pub kind: LayerKind,
    pub out: usize,
    pub in_: usize,
    pub kh: usize,
    pub kw: usize,
    pub ldm: String,
}

pub struct SdTable {
    pub family: &'static str,
    pub rows: Vec<ModuleRow>,
    by_kohya: HashMap<String, usize>,
    by_canonical: HashMap<String, usize>,
}

impl SdTable {
    fn parse(family: &'static str, text: &str) -> SdTable {
        let mut rows = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let c: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| -> usize {
                c.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                    panic!(
                        "formats/{family}.tsv line {}: bad number in column {}",
                        lineno + 1,
                        i + 1
                    )
                })
            };
            assert!(
                c.len() >= 8,
                "formats/{family}.tsv line {}: expected 8 columns",
                lineno + 1
            );
            let kind = match c[2] {
                "linear" => LayerKind::Linear,
                "conv" => LayerKind::Conv,
                other => panic!(
                    "formats/{family}.tsv line {}: unknown kind {other}",
                    lineno + 1
                ),
            };
            rows.push(ModuleRow {
                canonical: c[0].to_string(),
                kohya: c[1].to_string(),
                kind,
                out: num(3),
                in_: num(4),
                kh: num(5),
                kw: num(6),
                ldm: c[7].to_string(),
            });
        }
        let by_kohya = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.kohya.clone(), i))
            .collect();
        let by_canonical = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.canonical.clone(), i))
            .collect();
        SdTable {
            family,
            rows,
            by_kohya,
            by_canonical,
        }
    }

    pub fn by_kohya(&self, name: &str) -> Option<&ModuleRow> {
        self.by_kohya.get(name).map(|&i| &self.rows[i])
    }
    pub fn by_canonical(&self, path: &str) -> Option<&ModuleRow> {
        self.by_canonical.get(path).map(|&i| &self.rows[i])
    }
}

/// The embedded table for `family` (`sd15` or `sdxl`).
pub fn table(family: &str) -> Option<&'static SdTable> {
    static SD15: OnceLock<SdTable> = OnceLock::new();
    static SDXL: OnceLock<SdTable> = OnceLock::new();
    match family {
        "sd15" => Some(
            SD15.get_or_init(|| SdTable::parse("sd15", include_str!("../../formats/sd15.tsv"))),
        ),
        "sdxl" => Some(
            SDXL.get_or_init(|| SdTable::parse("sdxl", include_str!("../../formats/sdxl.tsv"))),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_and_names_are_unique() {
        for fam in FAMILIES {
            let t = table(fam).unwrap();
            assert!(!t.rows.is_empty(), "{fam} table is empty");
            assert_eq!(
                t.by_kohya.len(),
                t.rows.len(),
                "{fam}: duplicate kohya names"
            );
            assert_eq!(t.by_canonical.len(), t.rows.len(), "{fam}: duplicate paths");
        }
    }
}
