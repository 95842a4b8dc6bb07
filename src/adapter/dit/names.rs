//! The name index of one Flux / SD3 table: every module name any supported layout gives a
//! module, with the table rows it covers and how (row range in the source module, halves
//! swapped or not). Built from the table's columns, so a new layout is a new column or a new
//! naming rule here, never per-key string surgery.

use crate::adapter::Format;
use crate::formats::dit::{DitRow, DitTable, Rows};
use std::collections::HashMap;
use std::ops::Range;

/// A key layout of Flux / SD3 adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layout {
    Kohya,
    Comfy,
    OneTrainer,
    Xlabs,
    Lycoris,
    Diffusers,
}

impl Layout {
    /// The format loratool names a file of this layout.
    pub fn format(self) -> Format {
        match self {
            Layout::Kohya => Format::Kohya,
            Layout::Comfy => Format::Comfy,
            Layout::OneTrainer => Format::OneTrainer,
            Layout::Xlabs => Format::Xlabs,
            Layout::Lycoris => Format::Lycoris,
            Layout::Diffusers => Format::Diffusers,
        }
    }
}

/// One canonical module covered by a source module.
#[derive(Clone, Debug)]
pub struct Part {
    pub row: &'static DitRow,
    /// The rows of the source module's output that are this canonical module.
    pub range: Range<usize>,
    /// The source module holds the rows with their two halves exchanged.
    pub swap: bool,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub layout: Layout,
    /// In row order, tiling `0..out` of the source module.
    pub parts: Vec<Part>,
}

impl Entry {
    pub fn out(&self) -> usize {
        self.parts.last().map_or(0, |p| p.range.end)
    }
    pub fn in_(&self) -> usize {
        self.parts.first().map_or(0, |p| p.row.in_)
    }
}

pub struct NameIndex {
    pub table: &'static DitTable,
    map: HashMap<String, Entry>,
}

/// `a.b.c` → `a_b_c` (kohya-style names).
fn flat(path: &str) -> String {
    path.replace('.', "_")
}

/// Parts of an original (BFL / SAI / ComfyUI text-encoder) module, rows relative to it.
fn orig_parts(table: &'static DitTable, orig: &str) -> Vec<Part> {
    table
        .parts_of(orig)
        .into_iter()
        .map(|row| Part {
            row,
            range: match &row.rows {
                Rows::Range(r) => r.clone(),
                _ => 0..row.out,
            },
            swap: row.rows == Rows::SwapHalves,
        })
        .collect()
}

impl NameIndex {
    pub fn new(table: &'static DitTable) -> NameIndex {
        let mut map: HashMap<String, Entry> = HashMap::new();
        let mut add = |name: String, layout: Layout, parts: Vec<Part>| {
            map.entry(name).or_insert(Entry { layout, parts });
        };
        // per canonical module (diffusers-side names): diffusers, OneTrainer, SimpleTuner's
        // LyCORIS; these come first so a name two layouts share resolves to one module
        for row in &table.rows {
            let single = || {
                vec![Part {
                    row,
                    range: 0..row.out,
                    swap: false,
                }]
            };
            add(row.canonical.clone(), Layout::Diffusers, single());
            if let Some(ot) = &row.onetrainer {
                // kohya and OneTrainer share the CLIP-L names (`lora_te1_`)
                let layout = if ot.starts_with("lora_transformer_") {
                    Layout::OneTrainer
                } else if ot == &row.kohya {
                    Layout::Kohya
                } else {
                    Layout::OneTrainer
                };
                add(ot.clone(), layout, single());
            }
            if let Some(rest) = row.canonical.strip_prefix("transformer.") {
                add(format!("lycoris_{}", flat(rest)), Layout::Lycoris, single());
            }
        }
        // per original module (BFL / SAI side): kohya, ComfyUI, bare BFL, LyCORIS on BFL names
        let mut origs: Vec<&str> = table.rows.iter().map(|r| r.orig.as_str()).collect();
        origs.sort_unstable();
        origs.dedup();
        for orig in origs {
            let parts = orig_parts(table, orig);
            let Some(first) = parts.first() else { continue };
            add(first.row.kohya.clone(), Layout::Kohya, parts.clone());
            if orig.starts_with("text_encoders.") {
                add(orig.to_string(), Layout::Comfy, parts);
            } else {
                add(
                    format!("diffusion_model.{orig}"),
                    Layout::Comfy,
                    parts.clone(),
                );
                add(
                    format!("lycoris_{}", flat(orig)),
                    Layout::Lycoris,
                    parts.clone(),
                );
                add(orig.to_string(), Layout::Comfy, parts);
            }
        }
        // XLabs: processor modules over rows of the BFL modules
        let mut xlabs: Vec<&str> = table
            .rows
            .iter()
            .filter_map(|r| r.xlabs.as_deref())
            .collect();
        xlabs.sort_unstable();
        xlabs.dedup();
        for name in xlabs {
            let rows = table.by_xlabs(name);
            let base = rows
                .first()
                .and_then(|r| match &r.xlabs_rows {
                    Some(Rows::Range(x)) => Some(x.start),
                    _ => None,
                })
                .unwrap_or(0);
            let parts = rows
                .into_iter()
                .map(|row| Part {
                    row,
                    range: match &row.xlabs_rows {
                        Some(Rows::Range(x)) => x.start - base..x.end - base,
                        _ => 0..row.out,
                    },
                    swap: false,
                })
                .collect();
            add(name.to_string(), Layout::Xlabs, parts);
        }
        NameIndex { table, map }
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.map.get(name)
    }
}

/// A module's tensor key split into (module name, local part), for every layout:
/// `lora_A/B.weight` and XLabs `down/up.weight` become `lora_down`/`lora_up`; LyCORIS and
/// kohya suffixes come from `adapter::lycoris`.
pub fn split_key(key: &str) -> Option<(&str, &'static str)> {
    const PLAIN: [(&str, &str); 4] = [
        (".lora_A.weight", "lora_down"),
        (".lora_B.weight", "lora_up"),
        (".down.weight", "lora_down"),
        (".up.weight", "lora_up"),
    ];
    for (suffix, local) in PLAIN {
        if let Some(m) = key.strip_suffix(suffix) {
            if !m.is_empty() {
                return Some((m, local));
            }
        }
    }
    crate::adapter::lycoris::split_key(key)
}
