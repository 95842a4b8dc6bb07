//! `loratool quantize`, `bake` and `convert --to gguf` on a llama-shaped GGUF model, timed as
//! the CLI runs them (the release binary in a child process, wall time and peak RSS from
//! `/usr/bin/time`), with `cp` of the same file as the I/O floor. See BENCHMARKS.md.
//!
//!     cargo bench --bench gguf_ops
//!
//! Environment: `LORATOOL_BENCH_DIR` (default /tmp/loratool-bench; the ~1 GB model and the
//! adapter are generated there on first use), `LORATOOL_BENCH_RUNS` (default 3),
//! `LORATOOL_BENCH_CASES` (comma-separated name prefixes of the cases to run, e.g.
//! `cp,bake,llama`; default all), `LORATOOL_LLAMA_BIN` (directory of llama.cpp's tools, default
//! /work/cache/llama-cpp/bin: when `llama-export-lora` is there, the adapter is converted to a
//! GGUF LoRA once, untimed, and both loratool and `llama-export-lora` bake that same file).
//!
//! Runs are interleaved (each round runs every case once), so a change in machine load
//! affects all cases alike.
//!
//! Model: llama architecture, hidden 2048, 16 heads (4 KV heads), feed-forward 5632, 8 blocks,
//! vocabulary 32000, F16 matrices and F32 norms (491 M parameters, 983 MB). Adapter: PEFT,
//! rank 16, alpha 32, f32, on q/k/v/o of every block.

#[path = "common/llama_bench.rs"]
mod llama_bench;

use llama_bench::*;
use std::path::{Path, PathBuf};

const BLOCKS: usize = 8;

fn generate_adapter(dir: &Path) -> Res<()> {
    llama_bench::generate_adapter(dir, BLOCKS)?;
    std::fs::write(
        dir.join("base_config.json"),
        format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS}, "tie_word_embeddings": false}}"#
        ),
    )?;
    Ok(())
}

fn main() -> Res<()> {
    let dir = std::env::var_os("LORATOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/loratool-bench"));
    std::fs::create_dir_all(&dir)?;
    let runs: usize = std::env::var("LORATOOL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let model = dir.join("llama_f16.gguf");
    if !model.exists() {
        eprintln!("generating {}", model.display());
        generate_gguf_model(BLOCKS, &model)?;
    }
    let adapter = dir.join("llama_lora_r16");
    if !adapter.join("adapter_model.safetensors").exists() {
        generate_adapter(&adapter)?;
    }
    let bin = env!("CARGO_BIN_EXE_loratool");
    let size_mb = std::fs::metadata(&model)?.len() as f64 / 1e6;
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (m, a, cfg) = (
        model.to_string_lossy().into_owned(),
        adapter.to_string_lossy().into_owned(),
        adapter
            .join("base_config.json")
            .to_string_lossy()
            .into_owned(),
    );
    let q4k = p("llama_q4_k.gguf");
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            "cp (I/O floor)".into(),
            vec!["cp".into(), m.clone(), p("copy.gguf")],
        ),
        (
            "quantize q8_0".into(),
            vec![
                bin.into(),
                "quantize".into(),
                m.clone(),
                "--type".into(),
                "q8_0".into(),
                "-o".into(),
                p("llama_q8_0.gguf"),
            ],
        ),
        (
            "quantize q4_0".into(),
            vec![
                bin.into(),
                "quantize".into(),
                m.clone(),
                "--type".into(),
                "q4_0".into(),
                "-o".into(),
                p("llama_q4_0.gguf"),
            ],
        ),
        (
            "quantize q4_k".into(),
            vec![
                bin.into(),
                "quantize".into(),
                m.clone(),
                "--type".into(),
                "q4_k".into(),
                "-o".into(),
                q4k.clone(),
            ],
        ),
        (
            "quantize q6_k".into(),
            vec![
                bin.into(),
                "quantize".into(),
                m.clone(),
                "--type".into(),
                "q6_k".into(),
                "-o".into(),
                p("llama_q6_k.gguf"),
            ],
        ),
        (
            "bake r16 into f16".into(),
            vec![
                bin.into(),
                "bake".into(),
                m.clone(),
                a.clone(),
                "-o".into(),
                p("baked_f16.gguf"),
            ],
        ),
        (
            "bake r16 into q4_k".into(),
            vec![
                bin.into(),
                "bake".into(),
                q4k.clone(),
                a.clone(),
                "-o".into(),
                p("baked_q4_k.gguf"),
            ],
        ),
        (
            "convert r16 → gguf q8_0".into(),
            vec![
                bin.into(),
                "convert".into(),
                a.clone(),
                "--to".into(),
                "gguf".into(),
                "--base".into(),
                cfg.clone(),
                "--dtype".into(),
                "q8_0".into(),
                "-o".into(),
                p("adapter_q8_0.gguf"),
            ],
        ),
    ];
    // the same adapter as a GGUF LoRA, for llama-export-lora and loratool alike
    let llama_bin = std::env::var_os("LORATOOL_LLAMA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/cache/llama-cpp/bin"));
    let export_lora = llama_bin.join("llama-export-lora");
    let mut cases = cases;
    if export_lora.exists() {
        let gguf_adapter = p("adapter_f16.gguf");
        timed(&[
            bin,
            "convert",
            &a,
            "--to",
            "gguf",
            "--base",
            &m,
            "--dtype",
            "f16",
            "-o",
            &gguf_adapter,
        ])?;
        cases.push((
            "bake gguf-lora, loratool".into(),
            vec![
                bin.into(),
                "bake".into(),
                m.clone(),
                gguf_adapter.clone(),
                "-o".into(),
                p("baked_lt.gguf"),
            ],
        ));
        cases.push((
            "bake gguf-lora, llama-export-lora".into(),
            vec![
                export_lora.to_string_lossy().into_owned(),
                "-m".into(),
                m.clone(),
                "--lora".into(),
                gguf_adapter.clone(),
                "-o".into(),
                p("baked_llama.gguf"),
            ],
        ));
    } else {
        eprintln!(
            "{} not found: the llama-export-lora comparison is skipped",
            export_lora.display()
        );
    }
    let wanted = std::env::var("LORATOOL_BENCH_CASES").unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    cases.retain(|(name, _)| wanted.is_empty() || wanted.iter().any(|w| name.starts_with(w)));
    println!(
        "model {} ({size_mb:.0} MB), {runs} runs each, load average {}",
        model.display(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:<26} {:>10} {:>10} {:>12}",
        "operation", "median s", "MB/s in", "peak RSS"
    );
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = cases.iter().map(|_| Default::default()).collect();
    for _ in 0..runs {
        for ((_, args), (secs, rss)) in cases.iter().zip(&mut samples) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (s, r) = timed(&args)?;
            secs.push(s);
            rss.push(r);
            // outputs are removed once timed (disk space), except the Q4_K model later cases read
            if let Some(out) = args.last().filter(|o| **o != q4k) {
                let _ = std::fs::remove_file(out);
            }
        }
    }
    let median_of = |prefix: &str| {
        cases
            .iter()
            .position(|(n, _)| n == prefix)
            .map(|i| median(samples[i].0.clone()))
    };
    let (lt, llama) = (
        median_of("bake gguf-lora, loratool"),
        median_of("bake gguf-lora, llama-export-lora"),
    );
    for ((name, _), (secs, rss)) in cases.iter().zip(samples) {
        let input_mb = if name.contains("q4_k") && name.starts_with("bake") {
            std::fs::metadata(&q4k)?.len() as f64 / 1e6
        } else if name.starts_with("convert") {
            std::fs::metadata(adapter.join("adapter_model.safetensors"))?.len() as f64 / 1e6
        } else {
            size_mb
        };
        let t = median(secs);
        println!(
            "{name:<26} {t:>10.2} {:>10.0} {:>8.0} MiB",
            input_mb / t.max(1e-9),
            rss.iter().cloned().fold(0.0, f64::max)
        );
    }
    if let (Some(lt), Some(llama)) = (lt, llama) {
        println!(
            "bake of the GGUF LoRA: loratool {:.2}x llama-export-lora's speed",
            llama / lt
        );
    }
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
