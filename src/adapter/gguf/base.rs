//! What a GGUF LoRA needs to know about its base model: the llama.cpp architecture, the head
//! counts for the q/k permutation, whether embeddings are tied, and (from a base GGUF) every
//! tensor's shape. Read from a Hugging Face `config.json` (or the directory holding it) or from
//! the base model's GGUF file; both are untrusted input and validated.

use crate::error::{Error, Result};
use crate::formats::gguf::{arch_for_gguf, arch_for_hf, known_archs, ArchInfo};
use crate::io::gguf::{GgufFile, GgufValue};
use std::collections::HashMap;
use std::path::Path;

/// Largest head count accepted from a config (real models have at most a few hundred).
const MAX_HEADS: u64 = 1 << 16;

#[derive(Clone, Debug)]
pub struct GgufBase {
    pub arch: &'static ArchInfo,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub tied_embeddings: bool,
    /// Row-major shapes of the base GGUF's tensors (absent for a `config.json` base).
    pub tensor_shapes: Option<HashMap<String, Vec<usize>>>,
    /// What the base was read from, for messages.
    pub source: String,
}

impl GgufBase {
    /// Read `path`: a `config.json`, a directory holding one, or a GGUF model.
    pub fn load(path: &Path) -> Result<GgufBase> {
        let config = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        if crate::io::gguf::is_gguf(&config) {
            from_gguf(&GgufFile::open(&config)?)
        } else {
            from_config(&config)
        }
    }
}

fn unknown_arch(path: &Path, what: &str) -> Error {
    Error::unsupported(
        path,
        format!(
            "no GGUF name table for {what} (loratool has tables for {}; it never guesses tensor names, because a wrong name or a missing q/k permutation gives an adapter that loads and produces garbage)",
            known_archs().join(", ")
        ),
    )
}

fn head_count(path: &Path, key: &str, v: Option<u64>) -> Result<Option<usize>> {
    match v {
        None => Ok(None),
        Some(n) if (1..=MAX_HEADS).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(Error::malformed(
            path,
            format!("{key} = {n} is not a head count"),
        )),
    }
}

fn from_config(path: &Path) -> Result<GgufBase> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::malformed(path, format!("not a JSON config: {e}")))?;
    let hf = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .ok_or_else(|| {
            Error::malformed(
                path,
                "no \"architectures\" list: is this a transformers config.json?",
            )
        })?;
    let arch = arch_for_hf(hf).ok_or_else(|| unknown_arch(path, &format!("architecture {hf}")))?;
    let n_head = head_count(
        path,
        "num_attention_heads",
        v.get("num_attention_heads").and_then(|x| x.as_u64()),
    )?
    .ok_or_else(|| Error::malformed(path, "no num_attention_heads"))?;
    let n_kv_head = head_count(
        path,
        "num_key_value_heads",
        v.get("num_key_value_heads").and_then(|x| x.as_u64()),
    )?
    .unwrap_or(n_head);
    let tied = v
        .get("tie_word_embeddings")
        .and_then(|x| x.as_bool())
        .unwrap_or(arch.tied_default);
    Ok(GgufBase {
        arch,
        n_head,
        n_kv_head,
        tied_embeddings: tied,
        tensor_shapes: None,
        source: path.display().to_string(),
    })
}

/// The base described by an open GGUF model.
pub fn from_gguf(file: &GgufFile) -> Result<GgufBase> {
    let path = file.path();
    let name = file
        .architecture()
        .ok_or_else(|| Error::malformed(path, "no general.architecture"))?;
    if file.kv.get("general.type").and_then(GgufValue::as_str) == Some("adapter") {
        return Err(Error::unsupported(
            path,
            "this GGUF is an adapter; --base needs the base model (its GGUF or its config.json)",
        ));
    }
    let arch = arch_for_gguf(name)
        .ok_or_else(|| unknown_arch(path, &format!("GGUF architecture '{name}'")))?;
    let key = |k: &str| format!("{name}.attention.{k}");
    let get = |k: &str| -> Result<Option<u64>> {
        match file.kv.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::malformed(path, format!("{} is not a single integer ({v})", key(k)))
            }),
        }
    };
    let n_head = head_count(path, &key("head_count"), get("head_count")?)?
        .ok_or_else(|| Error::malformed(path, format!("no {}", key("head_count"))))?;
    let n_kv_head =
        head_count(path, &key("head_count_kv"), get("head_count_kv")?)?.unwrap_or(n_head);
    let shapes: HashMap<String, Vec<usize>> = file
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape()))
        .collect();
    Ok(GgufBase {
        arch,
        n_head,
        n_kv_head,
        tied_embeddings: !shapes.contains_key("output.weight"),
        tensor_shapes: Some(shapes),
        source: path.display().to_string(),
    })
}
