//! `loratool resize` and `merge --method svd` of this build against the same commands of an
//! earlier commit's binary (issue 15's starting point by default), side by side on the
//! SDXL-shaped inputs. See BENCHMARKS.md.
//!
//!     cargo bench --bench resize_merge_ab
//!
//! Environment: `LORATOOL_BENCH_DIR` (default /tmp/loratool-bench; the SDXL-shaped inputs of
//! `gen_sdxl_lora` are generated there when missing), `LORATOOL_BENCH_RUNS` (default 5), and the
//! baseline binary's variables (`common/baseline.rs`).
//!
//! Every run is the CLI in a child process under `/usr/bin/time` (wall time, peak RSS, CPU
//! seconds) and includes reading, the operation and writing the output. Runs are interleaved
//! (each round runs every command once, old and new alternating) so a change in machine load
//! affects both alike; `other s` is the most CPU time other processes used during one run.

#[path = "common/baseline.rs"]
mod baseline;
#[path = "common/llama_bench.rs"]
mod llama_bench;
#[path = "common/sdxl_lora.rs"]
mod sdxl_lora;

use llama_bench::{median, timed_full, Timing};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let dir = sdxl_lora::bench_dir();
    let runs: usize = std::env::var("LORATOOL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    sdxl_lora::generate_all(&dir, true)?;
    let Some((old, rev)) = baseline::baseline_binary()? else {
        println!("no baseline (LORATOOL_BENCH_BASELINE=none): nothing to compare");
        return Ok(());
    };
    let new = env!("CARGO_BIN_EXE_loratool");
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (r32, r64) = (p("sdxl_r32.safetensors"), p("sdxl_r64.safetensors"));
    // (name, arguments after the binary, output to remove before each run)
    let ops: Vec<(&str, Vec<String>, String)> = vec![
        (
            "resize --rank 8 (r32)",
            vec!["resize".into(), r32.clone(), "--rank".into(), "8".into()],
            p("ab_resize_out.safetensors"),
        ),
        (
            "merge --method svd --rank 16 (r32 + r64)",
            vec![
                "merge".into(),
                r32.clone(),
                r64.clone(),
                "--method".into(),
                "svd".into(),
                "--rank".into(),
                "16".into(),
            ],
            p("ab_merge_out.safetensors"),
        ),
    ];
    println!(
        "load average at start: {}, {} cores",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bins = [
        (rev.as_str(), old.to_string_lossy().into_owned()),
        ("new", new.to_string()),
    ];
    // samples[op][bin]
    let mut samples: Vec<[Vec<Timing>; 2]> = ops.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..runs {
        for (i, (_, args, out)) in ops.iter().enumerate() {
            // alternate which binary goes first, so neither always runs on a warmer cache
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for b in order {
                let _ = std::fs::remove_file(out);
                let mut cmd: Vec<&str> = vec![&bins[b].1];
                cmd.extend(args.iter().map(String::as_str));
                cmd.extend(["-o", out]);
                samples[i][b].push(timed_full(&cmd)?);
            }
            let _ = std::fs::remove_file(out);
        }
    }
    println!(
        "{:<42} {:>8} {:>9} {:>10} {:>7} {:>8} {:>8}",
        "command", "binary", "median s", "peak RSS", "cpu s", "other s", "speed-up"
    );
    for (i, (name, _, _)) in ops.iter().enumerate() {
        let med = |b: usize| median(samples[i][b].iter().map(|t| t.secs).collect());
        let (t_old, t_new) = (med(0), med(1));
        for (b, (label, _)) in bins.iter().enumerate() {
            let s = &samples[i][b];
            let rss = s.iter().map(|t| t.rss_mib).fold(0.0, f64::max);
            let cpu = median(s.iter().map(|t| t.cpu_s).collect());
            let other = s.iter().map(|t| t.other_cpu_s).fold(0.0, f64::max);
            let up = if b == 1 {
                format!("{:.2}x", t_old / t_new)
            } else {
                String::new()
            };
            println!(
                "{name:<42} {label:>8} {:>9.3} {rss:>6.0} MiB {cpu:>7.2} {other:>8.1} {up:>8}",
                med(b)
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
