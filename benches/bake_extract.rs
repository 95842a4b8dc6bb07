//! `loratool bake` and `extract` on generated llama-shaped Hugging Face models of two sizes, to
//! show that peak memory stays flat as the model grows, with `cp` of the same files as the I/O
//! floor. See BENCHMARKS.md.
//!
//!     cargo bench --bench bake_extract
//!
//! Environment: `LORATOOL_BENCH_DIR` (default /tmp/loratool-bench; models are generated there on
//! first use: about 2.1 GB and 4.2 GB of f16 safetensors, sharded at 1 GB), `LORATOOL_BENCH_RUNS`
//! (default 3).
//!
//! Models: hidden 2048, 16 heads (4 KV), feed-forward 5632, vocabulary 32000, 20 and 44 blocks.
//! Adapter: PEFT rank 16 on q/k/v/o of every block. Extract: each baked model against its base
//! at rank 16 (randomized), and `--exact` on the smaller pair; the overall relative error is
//! read from `--json`.

#[path = "common/llama_bench.rs"]
mod llama_bench;

use llama_bench::*;
use loratool::io::{write_safetensors, PendingTensor};
use loratool::tensor::{DType, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const SHARD_BYTES: usize = 1 << 30;

fn tensors(blocks: usize) -> Vec<(String, Vec<usize>, DType)> {
    let kv = HIDDEN / HEADS * KV_HEADS;
    let mut t = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![VOCAB, HIDDEN],
        DType::F16,
    )];
    for b in 0..blocks {
        let p = |n: &str| format!("model.layers.{b}.{n}.weight");
        t.push((p("input_layernorm"), vec![HIDDEN], DType::F16));
        t.push((p("self_attn.q_proj"), vec![HIDDEN, HIDDEN], DType::F16));
        t.push((p("self_attn.k_proj"), vec![kv, HIDDEN], DType::F16));
        t.push((p("self_attn.v_proj"), vec![kv, HIDDEN], DType::F16));
        t.push((p("self_attn.o_proj"), vec![HIDDEN, HIDDEN], DType::F16));
        t.push((p("post_attention_layernorm"), vec![HIDDEN], DType::F16));
        t.push((p("mlp.gate_proj"), vec![FFN, HIDDEN], DType::F16));
        t.push((p("mlp.up_proj"), vec![FFN, HIDDEN], DType::F16));
        t.push((p("mlp.down_proj"), vec![HIDDEN, FFN], DType::F16));
    }
    t.push(("model.norm.weight".into(), vec![HIDDEN], DType::F16));
    t.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN], DType::F16));
    t
}

/// A sharded model directory (shards of about 1 GB, an index, a config).
fn generate_model(dir: &Path, blocks: usize) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let all = tensors(blocks);
    let mut shards: Vec<Vec<(String, Vec<usize>, DType)>> = vec![Vec::new()];
    let mut size = 0;
    for t in all {
        let bytes = t.1.iter().product::<usize>() * t.2.size();
        if size + bytes > SHARD_BYTES && !shards.last().is_some_and(|s| s.is_empty()) {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().ok_or("shard")?.push(t);
    }
    let count = shards.len();
    let mut map = serde_json::Map::new();
    let mut seed = 0u64;
    for (i, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let pending: Vec<PendingTensor<'_>> = shard
            .into_iter()
            .map(|(name, shape, dtype)| {
                seed += 1;
                let s = seed;
                map.insert(name.clone(), serde_json::Value::String(file.clone()));
                PendingTensor {
                    written: None,
                    name,
                    dtype,
                    shape: shape.clone(),
                    data: Box::new(move || {
                        let n = shape.iter().product();
                        let t = Tensor::from_f32(shape.clone(), &values(n, s), dtype)?;
                        Ok(Cow::Owned(t.bytes().to_vec()))
                    }),
                }
            })
            .collect();
        let md: indexmap::IndexMap<String, String> = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        write_safetensors(&dir.join(&file), &pending, Some(&md), &|_| {})?;
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index)?,
    )?;
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS}, "num_hidden_layers": {blocks}, "hidden_size": {HIDDEN}}}"#
        ),
    )?;
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Res<()> {
    let root = std::env::var_os("LORATOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/loratool-bench"));
    let runs: usize = std::env::var("LORATOOL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bin = env!("CARGO_BIN_EXE_loratool");
    println!(
        "{:<40} {:>9} {:>9} {:>11} {:>9}",
        "operation", "median s", "MB/s", "peak RSS", "rel err"
    );
    for blocks in [20usize, 44] {
        let model = root.join(format!("hf_llama_{blocks}"));
        if !model.join("model.safetensors.index.json").exists() {
            eprintln!("generating {}", model.display());
            generate_model(&model, blocks)?;
        }
        let adapter = root.join(format!("hf_lora_{blocks}"));
        if !adapter.join("adapter_model.safetensors").exists() {
            generate_adapter(&adapter, blocks)?;
        }
        let mb = dir_bytes(&model) as f64 / 1e6;
        let out = root.join(format!("hf_baked_{blocks}"));
        let copy = root.join(format!("hf_copy_{blocks}"));
        let m = model.to_string_lossy().into_owned();
        let a = adapter.to_string_lossy().into_owned();
        let o = out.to_string_lossy().into_owned();
        let c = copy.to_string_lossy().into_owned();
        let mut cases: Vec<(String, Vec<String>, Option<PathBuf>)> = vec![
            (
                format!("cp -r ({mb:.0} MB)"),
                vec!["cp".into(), "-r".into(), m.clone(), c.clone()],
                Some(copy.clone()),
            ),
            (
                format!("bake r16 ({mb:.0} MB, {blocks} blocks)"),
                vec![
                    bin.into(),
                    "bake".into(),
                    m.clone(),
                    a.clone(),
                    "-o".into(),
                    o.clone(),
                ],
                Some(out.clone()),
            ),
        ];
        for exact in [false, true] {
            if exact && blocks != 20 {
                continue;
            }
            {
                let x = root.join(format!("hf_extracted_{blocks}_{exact}"));
                let mut args = vec![
                    bin.to_string(),
                    "extract".into(),
                    "--base".into(),
                    m.clone(),
                    "--tuned".into(),
                    o.clone(),
                    "--rank".into(),
                    "16".into(),
                    "-o".into(),
                    x.to_string_lossy().into_owned(),
                    "--json".into(),
                ];
                if exact {
                    args.push("--exact".into());
                }
                let name = if exact {
                    format!("extract r16 --exact ({blocks} blocks)")
                } else {
                    format!("extract r16 randomized ({blocks} blocks)")
                };
                cases.push((name, args, Some(x)));
            }
        }
        for (name, args, cleanup) in cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut secs = Vec::new();
            let mut rss: f64 = 0.0;
            let mut err = String::new();
            for _ in 0..runs {
                if let Some(p) = &cleanup {
                    let _ = std::fs::remove_dir_all(p);
                }
                // the extract runs need the baked model
                if name.starts_with("extract") && !out.exists() {
                    timed(&[bin, "bake", &m, &a, "-o", &o])?;
                }
                let (s, r, stdout) = timed_stdout(&args)?;
                secs.push(s);
                rss = rss.max(r);
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout) {
                    if let Some(e) = v.get("overall_rel_error").and_then(|e| e.as_f64()) {
                        err = format!("{e:.1e}");
                    }
                }
            }
            let t = median(secs);
            println!(
                "{name:<40} {t:>9.2} {:>9.0} {rss:>7.0} MiB {err:>9}",
                mb / t
            );
        }
    }
    Ok(())
}
