//! Which model family an adapter is for, from what its modules are called and shaped. Readers
//! call this when their format does not say; nothing here reads files.

use super::Adapter;
use crate::formats::sd;

/// A family name from module paths alone (where no table or config says better).
pub fn guess_family<'a>(paths: impl Iterator<Item = &'a str> + Clone) -> Option<String> {
    let all = |f: &dyn Fn(&str) -> bool| paths.clone().all(f);
    if all(&|p| {
        p.starts_with("model.layers.") || p.starts_with("model.embed_tokens") || p == "lm_head"
    }) {
        return Some("llama-like decoder".to_string());
    }
    if all(&|p| p.starts_with("transformer.h.") || p.starts_with("transformer.wte")) {
        return Some("gpt2-like decoder".to_string());
    }
    None
}

/// The SD family whose table knows every layer of `adapter` at its shape, if any.
pub fn guess_sd_family(adapter: &Adapter) -> Option<&'static str> {
    sd::FAMILIES.iter().copied().find(|fam| {
        let Some(table) = sd::table(fam) else {
            return false;
        };
        adapter.layers.iter().all(|(path, layer)| {
            table.by_canonical(path).is_some_and(|row| {
                row.out == layer.out_features()
                    && row.in_ == layer.in_features()
                    && (row.kh, row.kw) == layer.kernel()
            })
        })
    })
}
