//! Helpers shared by the integration tests: fixture paths, the CLI binary, and a naive dense
//! ΔW computed independently of loratool's own math.
#![allow(dead_code)]

use loratool::adapter::{Adapter, LayerKind, LoraLayer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A path as a CLI argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// One tensor of a safetensors file, in f64.
pub fn values(path: &Path, name: &str) -> Vec<f64> {
    loratool::io::SafetensorsFile::open(path)
        .expect("safetensors file")
        .tensor(name)
        .expect("tensor")
        .to_f64()
}

/// Run the `loratool` binary.
pub fn loratool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loratool"))
        .args(args)
        .output()
        .expect("run loratool")
}

/// Run the `loratool` binary, require exit code 0, return its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let o = loratool(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Read an adapter in any format (detected), with default options.
pub fn read_any(path: &Path) -> Adapter {
    loratool::adapter::detect::read_adapter(path, None, Default::default()).expect("adapter reads")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ΔW = (alpha / r) · up · down` as a row-major `[out, in·kh·kw]` matrix in f64, by a plain
/// triple loop (embeddings: the PEFT `[dim, num_embeddings]` orientation, untransposed).
pub fn dense_delta(layer: &LoraLayer) -> Vec<f64> {
    let down = layer.down.to_f64();
    let up = layer.up.to_f64();
    let r = layer.rank();
    let out = layer.up.shape()[0];
    let cols = down.len() / r;
    let s = layer.alpha / r as f64;
    let mut w = vec![0.0f64; out * cols];
    for o in 0..out {
        for k in 0..r {
            let u = up[o * r + k] * s;
            for c in 0..cols {
                w[o * cols + c] += u * down[k * cols + c];
            }
        }
    }
    w
}

/// Assert two adapters have the same modules and, per module, bit-identical factors (after
/// bringing both to the same shape), equal alpha and kind.
pub fn assert_same_layers(a: &Adapter, b: &Adapter) {
    let ka: Vec<&String> = a.layers.keys().collect();
    let kb: Vec<&String> = b.layers.keys().collect();
    assert_eq!(ka, kb, "module sets differ");
    for (p, la) in &a.layers {
        let lb = &b.layers[p];
        assert_eq!(la.kind, lb.kind, "{p}: kind");
        assert_eq!(la.alpha, lb.alpha, "{p}: alpha");
        assert_eq!(la.down.dtype(), lb.down.dtype(), "{p}: dtype");
        assert_eq!(la.down.bytes(), lb.down.bytes(), "{p}: down bytes");
        assert_eq!(la.up.bytes(), lb.up.bytes(), "{p}: up bytes");
        let (sa, sb) = (squeeze(la), squeeze(lb));
        assert_eq!(sa, sb, "{p}: shapes");
    }
}

fn squeeze(l: &LoraLayer) -> (Vec<usize>, Vec<usize>) {
    let f = |s: &[usize]| -> Vec<usize> {
        if l.kind == LayerKind::Conv {
            s.to_vec()
        } else {
            s.iter().copied().filter(|&d| d != 1).collect()
        }
    };
    (f(l.down.shape()), f(l.up.shape()))
}

/// Max |a-b| / max|a| over two dense matrices.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let m = a.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / m
}

/// Write tensors to a safetensors file (loratool's writer, which `safetensors_io` checks
/// byte for byte against the reference serializer).
pub fn write_st(path: &Path, tensors: &[(String, loratool::tensor::Tensor)], md: &[(&str, &str)]) {
    use loratool::io::{write_safetensors, PendingTensor};
    let pending: Vec<PendingTensor> = tensors
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    let meta: indexmap::IndexMap<String, String> = md
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write_safetensors(path, &pending, Some(&meta), &|_| {}).expect("write fixture");
}

/// A deterministic f32 tensor with values in [-1, 1).
pub fn pseudo(
    shape: Vec<usize>,
    seed: u64,
    dtype: loratool::tensor::DType,
) -> loratool::tensor::Tensor {
    let n: usize = shape.iter().product();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let vals: Vec<f32> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    loratool::tensor::Tensor::from_f32(shape, &vals, dtype).expect("tensor")
}

/// ⟨ΔW_x, ΔW_y⟩_F from the factors: tr((B_xᵀB_y)(A_yA_xᵀ))·s_x·s_y.
pub fn fro_inner(x: &LoraLayer, y: &LoraLayer) -> f64 {
    let (ux, dx, rx) = (x.up.to_f64(), x.down.to_f64(), x.rank());
    let (uy, dy, ry) = (y.up.to_f64(), y.down.to_f64(), y.rank());
    let m = ux.len() / rx;
    let n = dx.len() / rx;
    let mut bb = vec![0.0f64; rx * ry]; // B_xᵀ B_y
    for i in 0..m {
        for p in 0..rx {
            for q in 0..ry {
                bb[p * ry + q] += ux[i * rx + p] * uy[i * ry + q];
            }
        }
    }
    let mut aa = vec![0.0f64; ry * rx]; // A_y A_xᵀ
    for q in 0..ry {
        for p in 0..rx {
            let mut s = 0.0;
            for j in 0..n {
                s += dy[q * n + j] * dx[p * n + j];
            }
            aa[q * rx + p] = s;
        }
    }
    let mut t = 0.0;
    for p in 0..rx {
        for q in 0..ry {
            t += bb[p * ry + q] * aa[q * rx + p];
        }
    }
    t * x.scale() * y.scale()
}

/// ‖ΔW₁ − ΔW₂‖_F / ‖ΔW₂‖_F for two layers on the same module, from the factors by plain loops
/// (⟨B₁A₁, B₂A₂⟩ = tr((B₁ᵀB₂)(A₂A₁ᵀ))), so big modules need no dense matrix.
pub fn rel_fro_diff(a: &LoraLayer, b: &LoraLayer) -> f64 {
    rel_fro_diff_weighted(a, &[(b, 1.0)])
}

/// ‖ΔW_ours − Σ wᵢ·ΔWᵢ‖_F / ‖Σ wᵢ·ΔWᵢ‖_F, from the factors only.
pub fn rel_fro_diff_weighted(ours: &LoraLayer, terms: &[(&LoraLayer, f64)]) -> f64 {
    let xx = fro_inner(ours, ours);
    let xy: f64 = terms.iter().map(|(l, w)| w * fro_inner(ours, l)).sum();
    let mut yy = 0.0;
    for (a, wa) in terms {
        for (b, wb) in terms {
            yy += wa * wb * fro_inner(a, b);
        }
    }
    ((xx + yy - 2.0 * xy).max(0.0)).sqrt() / yy.sqrt().max(1e-300)
}

/// A PEFT adapter directory `dir/name` with one LoRA module at `module` (a canonical path such
/// as `model.layers.0.self_attn.q_proj`): f32 `lora_A` `[r, inp]` and `lora_B` `[out, r]` of
/// [`pseudo`] values, `lora_alpha` = `alpha`.
pub fn one_module_peft(
    dir: &Path,
    name: &str,
    module: &str,
    r: usize,
    alpha: f64,
    (out, inp): (usize, usize),
) -> PathBuf {
    use loratool::tensor::DType;
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("adapter dir");
    let target = module.rsplit('.').next().unwrap_or(module);
    std::fs::write(
        d.join("adapter_config.json"),
        format!(
            r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": {alpha}, "target_modules": ["{target}"]}}"#
        ),
    )
    .expect("config");
    let key = format!("base_model.model.{module}");
    write_st(
        &d.join("adapter_model.safetensors"),
        &[
            (
                format!("{key}.lora_A.weight"),
                pseudo(vec![r, inp], 1, DType::F32),
            ),
            (
                format!("{key}.lora_B.weight"),
                pseudo(vec![out, r], 2, DType::F32),
            ),
        ],
        &[],
    );
    d
}
