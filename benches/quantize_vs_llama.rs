//! `loratool quantize` against `llama-quantize` on the same llama-shaped F16 GGUF, in one run:
//! the two tools interleaved (A, B, A, B, ...), both with 2 threads, wall time, CPU time (user
//! plus system) and peak RSS from `/usr/bin/time`, medians of the runs; then every output tensor of
//! the two tools compared byte for byte. The copy floors of the same run: `cp` (which may copy
//! in the kernel without reading the data) and `dd bs=4M` (reads and writes every byte). CPU
//! time is the steadier figure on a shared machine. See BENCHMARKS.md.
//!
//!     benches/llama_cpp_tools.sh          # once: builds llama-quantize into /work/cache/llama-cpp
//!     cargo bench --bench quantize_vs_llama
//!
//! Environment: `LORATOOL_BENCH_DIR` (default /tmp/loratool-bench; the ~1 GB model and its
//! importance matrix are generated there on first use), `LORATOOL_BENCH_RUNS` (default 3),
//! `LLAMA_CPP_BIN` (default /work/cache/llama-cpp/bin), `LORATOOL_BENCH_CASES` (comma-separated
//! case names to run, default all).
//!
//! Model: the `gguf_ops` shape (llama, hidden 2048, 16 heads / 4 KV heads, feed-forward 5632,
//! 8 blocks, vocabulary 32000, F16 matrices, F32 norms) with the hyperparameters llama.cpp's
//! loader requires (context length, RMS epsilon, rope dimensions). Importance matrix: a GGUF
//! imatrix with an entry for every block matrix (positive pseudo-random sums, count 512), as
//! llama-imatrix writes it; both tools read the same file.

#[path = "common/llama_bench.rs"]
mod llama_bench;

use llama_bench::*;
use loratool::io::gguf::{write_gguf, GgufFile, GgufValue, PendingGgufTensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const BLOCKS: usize = 8;
const THREADS: &str = "2";

/// An importance matrix in llama-imatrix's GGUF layout for every block matrix of the model.
fn generate_imatrix(path: &Path) -> Res<()> {
    let mut kv = indexmap::IndexMap::new();
    kv.insert(
        "general.type".to_string(),
        GgufValue::String("imatrix".into()),
    );
    kv.insert(
        "imatrix.datasets".to_string(),
        GgufValue::Array {
            elem_type: 8,
            items: vec![GgufValue::String("synthetic".into())],
        },
    );
    kv.insert("imatrix.chunk_count".to_string(), GgufValue::U32(8));
    kv.insert("imatrix.chunk_size".to_string(), GgufValue::U32(512));
    let mut tensors = Vec::new();
    for (i, (name, shape, _)) in model_tensors(BLOCKS).into_iter().enumerate() {
        if !name.starts_with("blk.") || shape.len() != 2 {
            continue;
        }
        let ne0 = shape[1];
        tensors.push(PendingGgufTensor {
            written: None,
            name: format!("{name}.in_sum2"),
            dims: vec![ne0 as u64, 1],
            ggml_type: 0,
            data: Box::new(move || {
                let v: Vec<u8> = values(ne0, 9000 + i as u64)
                    .iter()
                    .flat_map(|x| ((x.abs() + 0.01) * 512.0).to_le_bytes())
                    .collect();
                Ok(Cow::Owned(v))
            }),
        });
        tensors.push(PendingGgufTensor {
            written: None,
            name: format!("{name}.counts"),
            dims: vec![1, 1],
            ggml_type: 0,
            data: Box::new(|| Ok(Cow::Owned(512f32.to_le_bytes().to_vec()))),
        });
    }
    write_gguf(path, &kv, &tensors, &|_| {})?;
    Ok(())
}

/// Every tensor of `a` and `b` has the same type and bytes (the tools order tensors
/// differently); returns the number compared.
fn same_tensors(a: &Path, b: &Path) -> Res<usize> {
    let (fa, fb) = (GgufFile::open(a)?, GgufFile::open(b)?);
    if fa.tensors.len() != fb.tensors.len() {
        return Err(format!("{} vs {} tensors", fa.tensors.len(), fb.tensors.len()).into());
    }
    for (name, ta) in &fa.tensors {
        let tb = fb.tensors.get(name).ok_or(format!("{name} missing"))?;
        if ta.ggml_type != tb.ggml_type || fa.tensor_bytes(name)? != fb.tensor_bytes(name)? {
            return Err(format!("{name} differs").into());
        }
        fa.release(name);
        fb.release(name);
    }
    Ok(fa.tensors.len())
}

struct Timing {
    wall: f64,
    /// user + system seconds
    cpu: f64,
    /// peak RSS, MiB
    rss: f64,
}

/// Wall, CPU and peak RSS of one command, from /usr/bin/time.
fn timed_cpu(args: &[&str]) -> Res<Timing> {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M %U %S"])
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
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if v.len() != 4 {
        return Err(format!("unexpected /usr/bin/time output {line}").into());
    }
    Ok(Timing {
        wall: v[0],
        rss: v[1] / 1024.0,
        cpu: v[2] + v[3],
    })
}

struct Case {
    name: &'static str,
    llama: Vec<String>,
    loratool: Vec<String>,
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
    let llama_bin = std::env::var_os("LLAMA_CPP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/cache/llama-cpp/bin"));
    let quantize = llama_bin.join("llama-quantize");
    if !quantize.exists() {
        return Err(format!(
            "{} not found: build it with benches/llama_cpp_tools.sh or set LLAMA_CPP_BIN",
            quantize.display()
        )
        .into());
    }
    let only: Option<Vec<String>> = std::env::var("LORATOOL_BENCH_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let model = dir.join("llama_f16_llamacpp.gguf");
    if !model.exists() {
        eprintln!("generating {}", model.display());
        generate_gguf_model(BLOCKS, &model)?;
    }
    let imatrix = dir.join("llama_f16_llamacpp.imatrix.gguf");
    if !imatrix.exists() {
        generate_imatrix(&imatrix)?;
    }
    let bin = env!("CARGO_BIN_EXE_loratool");
    let m = model.to_string_lossy().into_owned();
    let im = imatrix.to_string_lossy().into_owned();
    let out_l = dir.join("q_llama.gguf").to_string_lossy().into_owned();
    let out_t = dir.join("q_loratool.gguf").to_string_lossy().into_owned();
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pair = |name: &'static str, llama_args: &[&str], ours: &[&str]| {
        let mut llama = vec![quantize.to_string_lossy().into_owned()];
        llama.extend(own(llama_args));
        llama.extend([m.clone(), out_l.clone()]);
        // llama-quantize's name of the same type (with --pure: uniform)
        llama.push(ours[1].to_ascii_uppercase());
        llama.push(THREADS.into());
        let mut loratool = own(&["env", "RAYON_NUM_THREADS=2", bin, "quantize", &m]);
        loratool.extend(own(ours));
        loratool.extend(["-o".to_string(), out_t.clone()]);
        Case {
            name,
            llama,
            loratool,
        }
    };
    let cases = vec![
        pair("q8_0", &["--pure"], &["--type", "q8_0"]),
        pair("q4_0", &["--pure"], &["--type", "q4_0"]),
        pair("q4_1", &["--pure"], &["--type", "q4_1"]),
        pair("q5_0", &["--pure"], &["--type", "q5_0"]),
        pair("q5_1", &["--pure"], &["--type", "q5_1"]),
        pair("q2_k", &["--pure"], &["--type", "q2_k"]),
        pair("q3_k", &["--pure"], &["--type", "q3_k"]),
        pair("q4_k", &["--pure"], &["--type", "q4_k"]),
        pair("q5_k", &["--pure"], &["--type", "q5_k"]),
        pair("q6_k", &["--pure"], &["--type", "q6_k"]),
        pair("q4_k_m", &[], &["--type", "q4_k_m"]),
        pair(
            "q4_k_m imatrix",
            &["--imatrix", &im],
            &["--type", "q4_k_m", "--imatrix", &im],
        ),
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
        .collect();
    let size_mb = std::fs::metadata(&model)?.len() as f64 / 1e6;
    println!(
        "model {} ({size_mb:.0} MB), {runs} interleaved runs each, {THREADS} threads each",
        model.display()
    );
    // the copy floors of this run
    let of = format!("of={out_t}");
    let iff = format!("if={m}");
    for (name, args) in [
        ("cp", vec!["cp", &m, &out_t]),
        ("dd bs=4M", vec!["dd", &iff, &of, "bs=4M", "status=none"]),
    ] {
        let mut w = Vec::new();
        let mut c = Vec::new();
        for _ in 0..runs {
            let t = timed_cpu(&args)?;
            w.push(t.wall);
            c.push(t.cpu);
        }
        let (w, c) = (median(w), median(c));
        println!(
            "{name} of the model: {w:.2} s wall ({:.0} MB/s), {c:.2} s CPU",
            size_mb / w
        );
    }
    println!(
        "{:<15} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>8} {:>8} {:>9}  outputs",
        "type",
        "llama s",
        "ours s",
        "wall x",
        "llama cpu",
        "ours cpu",
        "cpu x",
        "ours MB/s",
        "RSS l/o",
        ""
    );
    for c in &cases {
        let (mut wl, mut wo, mut cl, mut co, mut rl, mut ro) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0f64, 0f64);
        for _ in 0..runs {
            let a: Vec<&str> = c.llama.iter().map(String::as_str).collect();
            let t = timed_cpu(&a)?;
            wl.push(t.wall);
            cl.push(t.cpu);
            rl = rl.max(t.rss);
            let b: Vec<&str> = c.loratool.iter().map(String::as_str).collect();
            let t = timed_cpu(&b)?;
            wo.push(t.wall);
            co.push(t.cpu);
            ro = ro.max(t.rss);
        }
        let (wl, wo, cl, co) = (median(wl), median(wo), median(cl), median(co));
        let same = match same_tensors(Path::new(&out_l), Path::new(&out_t)) {
            Ok(n) => format!("{n} tensors identical"),
            Err(e) => format!("DIFFER: {e}"),
        };
        println!(
            "{:<15} {wl:>9.2} {wo:>9.2} {:>6.2}x {cl:>9.2} {co:>9.2} {:>6.2}x {:>8.0} {:>4.0}/{:<4.0}  {same}",
            c.name,
            wl / wo,
            cl / co,
            size_mb / wo,
            rl,
            ro
        );
    }
    let _ = std::fs::remove_file(&out_l);
    let _ = std::fs::remove_file(&out_t);
    Ok(())
}
