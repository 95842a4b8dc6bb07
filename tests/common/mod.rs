//! Helpers shared by the integration tests: fixture paths, the CLI binary, and a naive dense
//! ΔW computed independently of loratool's own math.
#![allow(dead_code)]

use loratool::adapter::codec::ReadContext;
use loratool::adapter::{Adapter, LayerKind, LoraLayer, ReadOptions};
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
/// A read context with `opts` and no base model.
pub fn ctx(opts: ReadOptions) -> ReadContext<'static> {
    ReadContext { opts, base: None }
}

pub fn read_any(path: &Path) -> Adapter {
    loratool::adapter::codec::read_adapter(path, None, &ctx(Default::default()))
        .expect("adapter reads")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[allow(unused_imports)]
pub use loratool::testing::{dense_delta, layer_rel_diff};

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

/// ‖ΔW₁ − ΔW₂‖_F / ‖ΔW₂‖_F for two layers on the same module, from the factors.
pub fn rel_fro_diff(a: &LoraLayer, b: &LoraLayer) -> f64 {
    layer_rel_diff(a, &[(b, 1.0)])
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
