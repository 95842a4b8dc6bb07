//! Synthetic SDXL-shaped kohya LoRA files for the benchmarks (shared by `gen_sdxl_lora` and
//! `resize_merge` through `#[path]`; not a bench target of its own).
//!
//! One layer per row of `formats/sdxl.tsv` except `conv_in`, `conv_out`, `time_embedding` and
//! `add_embedding` (the modules kohya's LoCon, `networks.lora` with `conv_dim`, does not
//! target): every attention projection, feed-forward, `proj_in`/`proj_out`, resnet conv
//! (3x3), `conv_shortcut` (1x1), `time_emb_proj`, down/upsampler conv of the U-Net, and every
//! attention/MLP projection of both text encoders. 1052 modules.
//!
//! Factors are f16, alpha = rank / 2, and the spectra decay like a trained LoRA's:
//! `down` rows are N(0, 1/fan_in) (kaiming-like), `up` column j is N(0, 0.02²) scaled by
//! `1/(1+j)`, so σ_j of `up·down` falls roughly as 1/j. Every module gets its own ChaCha8
//! stream derived from `(seed, module index)`, so the output is the same bit for bit for the
//! same seed, whatever the thread count.

#![allow(dead_code)]

use loratool::adapter::{Adapter, AdapterMeta, Format, LayerKind, LoraLayer};
use loratool::formats::sd;
use loratool::tensor::{DType, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Modules of sdxl.tsv that kohya's LoRA/LoCon does not target.
pub const EXCLUDED: [&str; 4] = [
    "unet.conv_in",
    "unet.conv_out",
    "unet.time_embedding.",
    "unet.add_embedding.",
];

/// Default output directory (override with `LORATOOL_BENCH_DIR`).
pub const DEFAULT_DIR: &str = "/tmp/loratool-bench";

pub fn bench_dir() -> PathBuf {
    std::env::var_os("LORATOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The inputs the benchmarks use: (file name, rank, seed).
pub const INPUTS: [(&str, usize, u64); 3] = [
    ("sdxl_r32.safetensors", 32, 1),
    ("sdxl_r32_b.safetensors", 32, 2),
    ("sdxl_r64.safetensors", 64, 1),
];

pub fn targeted(canonical: &str) -> bool {
    !EXCLUDED
        .iter()
        .any(|e| canonical == *e || (e.ends_with('.') && canonical.starts_with(e)))
}

/// `len` standard normal values (Box–Muller on 53-bit uniforms).
fn normals(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    let unit = || 1.0 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) * unit();
        let u2 = (rng.next_u64() >> 11) as f64 * unit();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(len);
    out
}

/// One synthetic layer for a table row.
fn layer(row: &sd::ModuleRow, index: usize, rank: usize, seed: u64) -> loratool::Result<LoraLayer> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_add(0x5EED),
    );
    let fan_in = row.in_ * row.kh * row.kw;
    let down_std = 1.0 / (fan_in as f32).sqrt();
    let down: Vec<f32> = normals(&mut rng, rank * fan_in)
        .into_iter()
        .map(|x| x * down_std)
        .collect();
    let mut up = normals(&mut rng, row.out * rank);
    for r in up.chunks_exact_mut(rank) {
        for (j, x) in r.iter_mut().enumerate() {
            *x *= 0.02 / (1.0 + j as f32);
        }
    }
    let (down_shape, up_shape) = match row.kind {
        LayerKind::Conv => (
            vec![rank, row.in_, row.kh, row.kw],
            vec![row.out, rank, 1, 1],
        ),
        _ => (vec![rank, row.in_], vec![row.out, rank]),
    };
    LoraLayer::new(
        &row.canonical,
        Tensor::from_f32(down_shape, &down, DType::F16)?,
        Tensor::from_f32(up_shape, &up, DType::F16)?,
        rank as f64 / 2.0,
        row.kind,
    )
}

/// The synthetic SDXL LoRA of `rank` for `seed`, in memory.
pub fn sdxl_adapter(rank: usize, seed: u64) -> loratool::Result<Adapter> {
    let table = sd::table("sdxl").expect("the sdxl table is embedded");
    let rows: Vec<(usize, &sd::ModuleRow)> = table
        .rows
        .iter()
        .enumerate()
        .filter(|(_, r)| targeted(&r.canonical))
        .collect();
    let layers: Vec<(String, LoraLayer)> = rows
        .par_iter()
        .map(|&(i, row)| Ok((row.canonical.clone(), layer(row, i, rank, seed)?)))
        .collect::<loratool::Result<_>>()?;
    let mut meta = AdapterMeta {
        family: Some("sdxl".into()),
        source_format: Some(Format::Kohya),
        ..Default::default()
    };
    for (k, v) in [
        ("ss_network_module", "networks.lora".to_string()),
        ("ss_base_model_version", "sdxl_base_v1-0".to_string()),
        (
            "ss_training_comment",
            format!("synthetic loratool benchmark input: rank {rank}, seed {seed}"),
        ),
    ] {
        meta.source_metadata.insert(k.into(), v);
    }
    Ok(Adapter {
        layers: layers.into_iter().collect::<BTreeMap<_, _>>(),
        full: BTreeMap::new(),
        meta,
    })
}

/// Write the synthetic LoRA to `path` (atomically, via `kohya::write`).
pub fn write_sdxl(path: &Path, rank: usize, seed: u64) -> loratool::Result<u64> {
    let adapter = sdxl_adapter(rank, seed)?;
    let report = loratool::adapter::kohya::write(&adapter, path, &|_| {})?;
    Ok(report.bytes)
}

/// Generate every file of [`INPUTS`] into `dir`; with `only_missing`, keep files that exist.
pub fn generate_all(dir: &Path, only_missing: bool) -> loratool::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| loratool::Error::Invalid(format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for (name, rank, seed) in INPUTS {
        let path = dir.join(name);
        if !(only_missing && path.exists()) {
            let t = std::time::Instant::now();
            let bytes = write_sdxl(&path, rank, seed)?;
            eprintln!(
                "wrote {} (rank {rank}, seed {seed}): {:.1} MiB in {:.1} s",
                path.display(),
                bytes as f64 / (1u64 << 20) as f64,
                t.elapsed().as_secs_f64()
            );
        }
        out.push(path);
    }
    Ok(out)
}
