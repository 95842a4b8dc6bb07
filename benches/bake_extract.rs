//! `loratool bake` and `extract` on generated llama-shaped Hugging Face models of two sizes, to
//! show that peak memory stays flat as the model grows, with `cp` of the same files as the I/O
//! floor and the bake of an earlier commit side by side. See BENCHMARKS.md.
//!
//!     cargo bench --bench bake_extract
//!
//! Environment: `LORATOOL_BENCH_DIR` (default /tmp/loratool-bench; models are generated there on
//! first use: about 2.1 GB and 4.2 GB of f16 safetensors, sharded at 1 GB), `LORATOOL_BENCH_RUNS`
//! (default 3), `LORATOOL_BENCH_BLOCKS` (default `20,44`), `LORATOOL_BENCH_CASES` (any of `cp`,
//! `bake`, `baseline`, `extract`, `exact`; default all), and the baseline binary's variables
//! (`common/baseline.rs`: by default the commit before issue 15's work is built once).
//!
//! Runs are interleaved: each round runs every case once, so a change in machine load affects
//! all cases alike; each case reports its median, and `other s` is the most CPU time other
//! processes used during one of its runs.
//!
//! Models: hidden 2048, 16 heads (4 KV), feed-forward 5632, vocabulary 32000, 20 and 44 blocks.
//! Adapter: PEFT rank 16 on q/k/v/o of every block. Extract: each baked model against its base
//! at rank 16 (randomized), and `--exact` on the smaller pair; the overall relative error is
//! read from `--json`.

#[path = "common/baseline.rs"]
mod baseline;
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
                    source: None,
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

/// One command measured per round.
struct Case {
    name: String,
    args: Vec<String>,
    /// removed before each run (the command's output)
    cleanup: Option<PathBuf>,
    /// compared with `cp` of the same model (bytes per second ratio)
    vs_cp: bool,
}

fn main() -> Res<()> {
    let root = std::env::var_os("LORATOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/loratool-bench"));
    let runs: usize = std::env::var("LORATOOL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let blocks_list: Vec<usize> = std::env::var("LORATOOL_BENCH_BLOCKS")
        .unwrap_or_else(|_| "20,44".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let wanted: Vec<String> = std::env::var("LORATOOL_BENCH_CASES")
        .unwrap_or_else(|_| "cp,bake,baseline,extract,exact".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let want = |c: &str| wanted.iter().any(|w| w == c);
    let bin = env!("CARGO_BIN_EXE_loratool");
    let baseline = if want("baseline") {
        baseline::baseline_binary()?
    } else {
        None
    };
    println!("load average at start: {}", loadavg());
    println!(
        "{:<44} {:>9} {:>8} {:>11} {:>8} {:>8} {:>9} {:>8}",
        "operation", "median s", "MB/s", "peak RSS", "cpu s", "other s", "rel err", "vs cp"
    );
    for blocks in blocks_list {
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
        let out_old = root.join(format!("hf_baked_old_{blocks}"));
        let copy = root.join(format!("hf_copy_{blocks}"));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let (m, a, o) = (s(&model), s(&adapter), s(&out));
        let mut cases = Vec::new();
        if want("cp") {
            cases.push(Case {
                name: format!("cp -r ({mb:.0} MB)"),
                args: vec!["cp".into(), "-r".into(), m.clone(), s(&copy)],
                cleanup: Some(copy.clone()),
                vs_cp: false,
            });
        }
        if want("bake") {
            cases.push(Case {
                name: format!("bake r16 ({mb:.0} MB, {blocks} blocks)"),
                args: vec![
                    bin.into(),
                    "bake".into(),
                    m.clone(),
                    a.clone(),
                    "-o".into(),
                    o.clone(),
                ],
                cleanup: Some(out.clone()),
                vs_cp: true,
            });
        }
        if let Some((old, rev)) = &baseline {
            cases.push(Case {
                name: format!("bake r16, {rev} ({blocks} blocks)"),
                args: vec![
                    s(old),
                    "bake".into(),
                    m.clone(),
                    a.clone(),
                    "-o".into(),
                    s(&out_old),
                ],
                cleanup: Some(out_old.clone()),
                vs_cp: true,
            });
        }
        for exact in [false, true] {
            if (exact && (blocks != 20 || !want("exact"))) || (!exact && !want("extract")) {
                continue;
            }
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
                s(&x),
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
            cases.push(Case {
                name,
                args,
                cleanup: Some(x),
                vs_cp: false,
            });
        }
        let mut samples: Vec<Vec<Timing>> = cases.iter().map(|_| Vec::new()).collect();
        let mut errs: Vec<String> = cases.iter().map(|_| String::new()).collect();
        for _ in 0..runs {
            for (i, case) in cases.iter().enumerate() {
                if let Some(p) = &case.cleanup {
                    let _ = std::fs::remove_dir_all(p);
                }
                // the extract runs need the baked model
                if case.name.starts_with("extract") && !out.exists() {
                    timed(&[bin, "bake", &m, &a, "-o", &o])?;
                }
                let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
                let t = timed_full(&args)?;
                // outputs are removed once timed (disk space), except the bake the extract
                // runs read
                let keep =
                    case.name.starts_with("bake r16 (") && (want("extract") || want("exact"));
                if let (Some(p), false) = (&case.cleanup, keep) {
                    let _ = std::fs::remove_dir_all(p);
                }
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t.stdout) {
                    if let Some(e) = v.get("overall_rel_error").and_then(|e| e.as_f64()) {
                        errs[i] = format!("{e:.1e}");
                    }
                }
                samples[i].push(t);
            }
        }
        let cp_median = cases
            .iter()
            .position(|c| c.name.starts_with("cp"))
            .map(|i| median(samples[i].iter().map(|t| t.secs).collect()));
        for (i, case) in cases.iter().enumerate() {
            let t = median(samples[i].iter().map(|t| t.secs).collect());
            let cpu = median(samples[i].iter().map(|t| t.cpu_s).collect());
            let rss = samples[i].iter().map(|t| t.rss_mib).fold(0.0, f64::max);
            let other = samples[i].iter().map(|t| t.other_cpu_s).fold(0.0, f64::max);
            let vs_cp = match (case.vs_cp, cp_median) {
                (true, Some(c)) => format!("{:.0} %", 100.0 * c / t),
                _ => String::new(),
            };
            println!(
                "{:<44} {t:>9.2} {:>8.0} {rss:>7.0} MiB {cpu:>8.2} {other:>8.1} {:>9} {vs_cp:>8}",
                case.name,
                mb / t,
                errs[i]
            );
        }
        if let (Some(new), Some(old)) = (
            cases.iter().position(|c| c.name.starts_with("bake r16 (")),
            cases.iter().position(|c| c.name.starts_with("bake r16, ")),
        ) {
            let tn = median(samples[new].iter().map(|t| t.secs).collect());
            let to = median(samples[old].iter().map(|t| t.secs).collect());
            println!(
                "bake ({blocks} blocks): {:.2}x the baseline's speed",
                to / tn
            );
        }
    }
    println!("load average at end: {}", loadavg());
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
