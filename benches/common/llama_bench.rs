//! What the model-level benchmarks (`gguf_ops`, `quantize_vs_llama`, `bake_extract`) share: the
//! llama shape, model, value and adapter generators, and timing of a child command. Included with `#[path]`.

#![allow(dead_code)]

use loratool::io::gguf::{write_gguf, GgufValue, PendingGgufTensor};
use loratool::io::{write_safetensors, PendingTensor};
use loratool::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::Path;
use std::process::Command;

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub const HIDDEN: usize = 2048;
pub const HEADS: usize = 16;
pub const KV_HEADS: usize = 4;
pub const FFN: usize = 5632;
pub const VOCAB: usize = 32000;
pub const RANK: usize = 16;

/// Deterministic values in about ±0.05 (splitmix64 per element).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut z = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

/// A PEFT adapter (rank 16, alpha 32, f32) on q/k/v/o of `blocks` llama blocks.
pub fn generate_adapter(dir: &Path, blocks: usize) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("adapter_config.json"),
        format!(
            r#"{{"peft_type": "LORA", "r": {RANK}, "lora_alpha": {}, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "task_type": "CAUSAL_LM"}}"#,
            2 * RANK
        ),
    )?;
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut owned: Vec<(String, Tensor)> = Vec::new();
    let mut seed = 5000;
    for b in 0..blocks {
        for (m, out) in [
            ("q_proj", HIDDEN),
            ("k_proj", kv),
            ("v_proj", kv),
            ("o_proj", HIDDEN),
        ] {
            let key = format!("base_model.model.model.layers.{b}.self_attn.{m}");
            for (suffix, shape) in [("lora_A", vec![RANK, HIDDEN]), ("lora_B", vec![out, RANK])] {
                seed += 1;
                let n = shape.iter().product();
                let t = Tensor::from_f32(shape, &values(n, seed), DType::F32)?;
                owned.push((format!("{key}.{suffix}.weight"), t));
            }
        }
    }
    let pending: Vec<_> = owned
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &pending,
        None,
        &|_| {},
    )?;
    Ok(())
}

/// Wall seconds and peak RSS (MiB) of one command, from /usr/bin/time.
pub fn timed(args: &[&str]) -> Res<(f64, f64)> {
    timed_stdout(args).map(|(s, r, _)| (s, r))
}

/// [`timed`], also returning the child's stdout.
pub fn timed_stdout(args: &[&str]) -> Res<(f64, f64, String)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M"])
        .args(args)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{args:?} failed: {err}").into());
    }
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("TIME "))
        .ok_or("no /usr/bin/time output")?;
    let mut it = line.split_whitespace().skip(1);
    let secs: f64 = it.next().ok_or("time")?.parse()?;
    let kib: f64 = it.next().ok_or("rss")?.parse()?;
    Ok((
        secs,
        kib / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// One timed child run: wall seconds, peak RSS (MiB), its CPU seconds (user + system) and
/// the CPU seconds other processes used meanwhile (from /proc/stat).
pub struct Timing {
    pub secs: f64,
    pub rss_mib: f64,
    pub cpu_s: f64,
    pub other_cpu_s: f64,
    pub stdout: String,
}

/// [`timed_stdout`] with CPU accounting.
pub fn timed_full(args: &[&str]) -> Res<Timing> {
    let busy0 = machine_busy();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M %U %S"])
        .args(args)
        .output()?;
    let busy = machine_busy() - busy0;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{args:?} failed: {err}").into());
    }
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("TIME "))
        .ok_or("no /usr/bin/time output")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    let cpu_s = f.get(2).copied().unwrap_or(0.0) + f.get(3).copied().unwrap_or(0.0);
    Ok(Timing {
        secs: f[0],
        rss_mib: f.get(1).copied().unwrap_or(0.0) / 1024.0,
        cpu_s,
        other_cpu_s: (busy - cpu_s).max(0.0),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// CPU seconds the machine has been busy, all cores (/proc/stat).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

/// The median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The tensors of a llama-architecture GGUF model of `blocks` blocks at the shape above, with
/// llama.cpp's names and an F16 converter's types.
pub fn model_tensors(blocks: usize) -> Vec<(String, Vec<usize>, DType)> {
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut t = vec![(
        "token_embd.weight".to_string(),
        vec![VOCAB, HIDDEN],
        DType::F16,
    )];
    for b in 0..blocks {
        let p = |n: &str| format!("blk.{b}.{n}.weight");
        t.push((p("attn_norm"), vec![HIDDEN], DType::F32));
        t.push((p("attn_q"), vec![HIDDEN, HIDDEN], DType::F16));
        t.push((p("attn_k"), vec![kv, HIDDEN], DType::F16));
        t.push((p("attn_v"), vec![kv, HIDDEN], DType::F16));
        t.push((p("attn_output"), vec![HIDDEN, HIDDEN], DType::F16));
        t.push((p("ffn_norm"), vec![HIDDEN], DType::F32));
        t.push((p("ffn_gate"), vec![FFN, HIDDEN], DType::F16));
        t.push((p("ffn_up"), vec![FFN, HIDDEN], DType::F16));
        t.push((p("ffn_down"), vec![HIDDEN, FFN], DType::F16));
    }
    t.push(("output_norm.weight".into(), vec![HIDDEN], DType::F32));
    t.push(("output.weight".into(), vec![VOCAB, HIDDEN], DType::F16));
    t
}

/// A llama-architecture F16 GGUF model of `blocks` blocks with llama.cpp's converter metadata
/// (the input of the quantize and GGUF bake benchmarks).
pub fn generate_gguf_model(blocks: usize, path: &Path) -> Res<()> {
    let mut kv = indexmap::IndexMap::new();
    let s = |v: &str| GgufValue::String(v.into());
    let u = |v: usize| GgufValue::U32(v as u32);
    kv.insert("general.architecture".to_string(), s("llama"));
    kv.insert("general.type".to_string(), s("model"));
    kv.insert("general.name".to_string(), s("bench-llama-0.5b"));
    kv.insert("general.file_type".to_string(), u(1));
    kv.insert("llama.context_length".to_string(), u(2048));
    kv.insert("llama.block_count".to_string(), u(blocks));
    kv.insert("llama.embedding_length".to_string(), u(HIDDEN));
    kv.insert("llama.feed_forward_length".to_string(), u(FFN));
    kv.insert("llama.attention.head_count".to_string(), u(HEADS));
    kv.insert("llama.attention.head_count_kv".to_string(), u(KV_HEADS));
    kv.insert("llama.rope.dimension_count".to_string(), u(HIDDEN / HEADS));
    kv.insert(
        "llama.attention.layer_norm_rms_epsilon".to_string(),
        GgufValue::F32(1e-5),
    );
    kv.insert("llama.vocab_size".to_string(), u(VOCAB));
    let tensors: Vec<PendingGgufTensor<'_>> = model_tensors(blocks)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, dtype))| PendingGgufTensor {
            written: None,
            name,
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: if dtype == DType::F16 { 1 } else { 0 },
            data: Box::new(move || {
                let n = shape.iter().product();
                let t = Tensor::from_f32(shape.clone(), &values(n, i as u64), dtype)?;
                Ok(Cow::Owned(t.bytes().to_vec()))
            }),
        })
        .collect();
    write_gguf(path, &kv, &tensors, &|_| {})?;
    Ok(())
}
