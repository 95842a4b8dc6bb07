//! llama.cpp's tensor names for Hugging Face modules (`formats/gguf_names.tsv`) and what
//! loratool needs to know about each architecture (`formats/gguf_archs.tsv`). Both tables are
//! checked against gguf-py's own name map by `formats/gen/check_gguf_tables.py` in CI.

use std::sync::OnceLock;

const NAMES_TSV: &str = include_str!("../../formats/gguf_names.tsv");
const ARCHS_TSV: &str = include_str!("../../formats/gguf_archs.tsv");

/// What the converter does to a module's tensors beyond renaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// llama-arch query: rows permuted for ggml's adjacent-pair RoPE, with the head count.
    RopeQ,
    /// llama-arch key: the same permutation with the KV head count.
    RopeK,
    /// Token embedding: llama.cpp wants `lora_a` transposed.
    Embed,
    /// Output projection: absent from the base when embeddings are tied.
    LmHead,
}

/// One Hugging Face architecture (`config.json` `architectures[0]`).
#[derive(Clone, Debug)]
pub struct ArchInfo {
    pub hf_architecture: String,
    /// `general.architecture` of the GGUF files llama.cpp's converter makes for it.
    pub arch: String,
    /// Whether q/k rows are permuted (llama-arch, ggml's NORM RoPE).
    pub rope_permute: bool,
    /// `tie_word_embeddings` when `config.json` does not say (the transformers default).
    pub tied_default: bool,
}

#[derive(Clone, Debug)]
struct NameRow {
    arch: String,
    hf: Pattern,
    gguf: Pattern,
    transform: Transform,
}

/// A name with at most one `{N}` (the block index).
#[derive(Clone, Debug)]
struct Pattern {
    prefix: String,
    suffix: Option<String>,
}

impl Pattern {
    fn parse(s: &str) -> Pattern {
        match s.split_once("{N}") {
            Some((p, rest)) => Pattern {
                prefix: p.to_string(),
                suffix: Some(rest.to_string()),
            },
            None => Pattern {
                prefix: s.to_string(),
                suffix: None,
            },
        }
    }

    /// The block index matched (`Some(None)` for a pattern without one), if `name` matches.
    fn matches<'n>(&self, name: &'n str) -> Option<Option<&'n str>> {
        let rest = name.strip_prefix(self.prefix.as_str())?;
        match &self.suffix {
            None => rest.is_empty().then_some(None),
            Some(suffix) => {
                let n = rest.strip_suffix(suffix.as_str())?;
                let digits = !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit());
                digits.then_some(Some(n))
            }
        }
    }

    fn fill(&self, n: Option<&str>) -> String {
        match (&self.suffix, n) {
            (Some(s), Some(n)) => format!("{}{n}{s}", self.prefix),
            _ => self.prefix.clone(),
        }
    }
}

struct Tables {
    archs: Vec<ArchInfo>,
    names: Vec<NameRow>,
}

fn rows(tsv: &str) -> impl Iterator<Item = Vec<&str>> {
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').collect())
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        archs: rows(ARCHS_TSV)
            .filter(|c| c.len() == 4)
            .map(|c| ArchInfo {
                hf_architecture: c[0].to_string(),
                arch: c[1].to_string(),
                rope_permute: c[2] == "yes",
                tied_default: c[3] == "yes",
            })
            .collect(),
        names: rows(NAMES_TSV)
            .filter(|c| c.len() == 4)
            .map(|c| NameRow {
                arch: c[0].to_string(),
                hf: Pattern::parse(c[1]),
                gguf: Pattern::parse(c[2]),
                transform: match c[3] {
                    "rope_q" => Transform::RopeQ,
                    "rope_k" => Transform::RopeK,
                    "embed" => Transform::Embed,
                    "lm_head" => Transform::LmHead,
                    _ => Transform::None,
                },
            })
            .collect(),
    })
}

/// The entry for a Hugging Face architecture name.
pub fn arch_for_hf(hf_architecture: &str) -> Option<&'static ArchInfo> {
    tables()
        .archs
        .iter()
        .find(|a| a.hf_architecture == hf_architecture)
}

/// The entry for a GGUF `general.architecture` (the first Hugging Face architecture that
/// converts to it).
pub fn arch_for_gguf(arch: &str) -> Option<&'static ArchInfo> {
    tables().archs.iter().find(|a| a.arch == arch)
}

/// The GGUF architectures that have a name table, for messages.
pub fn known_archs() -> Vec<&'static str> {
    let mut v: Vec<&str> = tables().archs.iter().map(|a| a.arch.as_str()).collect();
    v.dedup();
    v
}

/// The GGUF base tensor name (`blk.0.attn_q.weight`) of a Hugging Face module path
/// (`model.layers.0.self_attn.q_proj`) on `arch`.
pub fn to_gguf(arch: &str, module: &str) -> Option<(String, Transform)> {
    tables()
        .names
        .iter()
        .filter(|r| r.arch == arch)
        .find_map(|r| r.hf.matches(module).map(|n| (r.gguf.fill(n), r.transform)))
}

/// The Hugging Face module path of a GGUF base tensor name on `arch` (the first table row
/// that produces it).
pub fn to_hf(arch: &str, tensor: &str) -> Option<(String, Transform)> {
    tables()
        .names
        .iter()
        .filter(|r| r.arch == arch)
        .find_map(|r| r.gguf.matches(tensor).map(|n| (r.hf.fill(n), r.transform)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names_both_ways() {
        let (g, t) = to_gguf("llama", "model.layers.12.self_attn.k_proj").expect("mapped");
        assert_eq!((g.as_str(), t), ("blk.12.attn_k.weight", Transform::RopeK));
        let (h, t) = to_hf("llama", "blk.12.attn_k.weight").expect("mapped");
        assert_eq!(
            (h.as_str(), t),
            ("model.layers.12.self_attn.k_proj", Transform::RopeK)
        );
        assert_eq!(
            to_gguf("llama", "model.embed_tokens"),
            Some(("token_embd.weight".into(), Transform::Embed))
        );
        assert_eq!(
            to_gguf("qwen2", "model.layers.0.self_attn.q_proj"),
            Some(("blk.0.attn_q.weight".into(), Transform::None))
        );
    }

    #[test]
    fn unknown_names_and_hostile_indices_do_not_match() {
        assert_eq!(to_gguf("llama", "model.layers.x.self_attn.q_proj"), None);
        assert_eq!(to_gguf("llama", "model.layers..self_attn.q_proj"), None);
        assert_eq!(
            to_gguf("llama", "model.layers.1.self_attn.q_proj.extra"),
            None
        );
        assert_eq!(to_gguf("nope", "lm_head"), None);
        assert_eq!(
            to_gguf("gemma", "lm_head"),
            None,
            "gemma's converter drops lm_head"
        );
        assert_eq!(to_hf("llama", "blk.99999999.attn_q.weight"), None);
    }

    #[test]
    fn architectures() {
        assert_eq!(
            arch_for_hf("MistralForCausalLM").map(|a| a.arch.as_str()),
            Some("llama")
        );
        assert!(arch_for_gguf("llama").is_some_and(|a| a.rope_permute));
        assert!(arch_for_gguf("qwen3").is_some_and(|a| !a.rope_permute));
        assert!(arch_for_gguf("gemma2").is_some_and(|a| a.tied_default));
        for a in [
            "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
        ] {
            assert!(known_archs().contains(&a), "{a}");
        }
    }
}
