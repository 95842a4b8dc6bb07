//! kohya's `sshs_model_hash` and `sshs_legacy_hash`, computed as sd-scripts does
//! (`precalculate_safetensors_hashes`): serialise the tensors with only the `ss_*` metadata,
//! then hash
//! - the data region (everything after the header) with sha256, full hex: the model hash;
//! - bytes `[0x100000, 0x110000)` of that serialisation with sha256, first 8 hex: the legacy
//!   hash (a file shorter than 1 MiB hashes the empty string).
//!
//! The serialisation is never materialised: the header comes from [`plan_layout`], and the
//! tensor bytes are streamed through both hashers in data order. The model hash does not depend
//! on metadata at all, so it equals sha256 of the final file's data region, which the writer
//! checks. The legacy hash depends only on the header's length, not on key order, as long as
//! the header is shorter than 1 MiB; past that, sd-scripts' own result depends on Rust's
//! `HashMap` order and is not reproducible even by sd-scripts, and loratool uses insertion order.

use crate::error::Result;
use crate::io::safetensors_write::plan_layout;
use crate::tensor::Tensor;
use indexmap::IndexMap;
use sha2::{Digest, Sha256};

const LEGACY_START: u64 = 0x100000;
const LEGACY_END: u64 = 0x110000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KohyaHashes {
    pub model: String,
    pub legacy: String,
}

/// The `ss_*` subset of `metadata` that sd-scripts hashes with.
pub fn hashed_metadata(metadata: &IndexMap<String, String>) -> IndexMap<String, String> {
    metadata
        .iter()
        .filter(|(k, _)| k.starts_with("ss_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Both hashes for `tensors` saved with `metadata` (filtered to `ss_*` here).
pub fn kohya_hashes(
    tensors: &[(String, &Tensor)],
    metadata: &IndexMap<String, String>,
) -> Result<KohyaHashes> {
    let specs: Vec<_> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.dtype(), t.shape()))
        .collect();
    let layout = plan_layout(&specs, Some(&hashed_metadata(metadata)))?;
    let mut model = Sha256::new();
    let mut legacy = Sha256::new();
    let mut pos: u64 = 0;
    let mut feed_legacy = |bytes: &[u8], pos: &mut u64| {
        let (start, end) = (*pos, *pos + bytes.len() as u64);
        let (lo, hi) = (start.max(LEGACY_START), end.min(LEGACY_END));
        if lo < hi {
            legacy.update(&bytes[(lo - start) as usize..(hi - start) as usize]);
        }
        *pos = end;
    };
    feed_legacy(&layout.header, &mut pos);
    for &i in &layout.order {
        let bytes = tensors[i].1.bytes();
        model.update(bytes);
        feed_legacy(bytes, &mut pos);
    }
    let legacy_hex = hex::encode(legacy.finalize());
    Ok(KohyaHashes {
        model: hex::encode(model.finalize()),
        legacy: legacy_hex[..8].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    /// Naive oracle: build the whole serialisation in memory and hash slices of it.
    fn naive(tensors: &[(String, &Tensor)], md: &IndexMap<String, String>) -> KohyaHashes {
        let specs: Vec<_> = tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype(), t.shape()))
            .collect();
        let layout = plan_layout(&specs, Some(&hashed_metadata(md))).unwrap();
        let mut file = layout.header.clone();
        for &i in &layout.order {
            file.extend_from_slice(tensors[i].1.bytes());
        }
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let model = hex::encode(Sha256::digest(&file[8 + n..]));
        let lo = (LEGACY_START as usize).min(file.len());
        let hi = (LEGACY_END as usize).min(file.len());
        let legacy = hex::encode(Sha256::digest(&file[lo..hi]))[..8].to_string();
        KohyaHashes { model, legacy }
    }

    #[test]
    fn streamed_hashes_equal_hashes_of_the_materialised_file() {
        let big: Vec<f32> = (0..300_000).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = Tensor::from_f32(vec![600, 500], &big, DType::F32).unwrap();
        let b = Tensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0], DType::F16).unwrap();
        let alpha = Tensor::scalar(4.0, DType::I64).unwrap();
        let tensors = vec![
            ("x.lora_down.weight".to_string(), &a),
            ("x.lora_up.weight".to_string(), &b),
            ("x.alpha".to_string(), &alpha),
        ];
        let mut md = IndexMap::new();
        md.insert("ss_network_dim".to_string(), "4".to_string());
        md.insert("modelspec.title".to_string(), "ignored".to_string());
        let got = kohya_hashes(&tensors, &md).unwrap();
        assert_eq!(got, naive(&tensors, &md));
        assert_ne!(got.legacy, "e3b0c442", "a >1 MiB file must hash real bytes");
        // non-ss metadata does not change either hash
        md.shift_remove("modelspec.title");
        assert_eq!(kohya_hashes(&tensors, &md).unwrap(), got);
    }

    #[test]
    fn small_file_legacy_hash_is_the_empty_hash() {
        let b = Tensor::from_f32(vec![2], &[1.0, 2.0], DType::F32).unwrap();
        let got = kohya_hashes(&[("a".to_string(), &b)], &IndexMap::new()).unwrap();
        assert_eq!(got.legacy, "e3b0c442");
        assert_eq!(got.model, hex::encode(Sha256::digest(b.bytes())));
    }
}
