//! loratool's factored resize/merge against the dense method of the reference tools, on an
//! SDXL-shaped kohya LoRA, in the same run. See BENCHMARKS.md for results and how to read them.
//!
//!     cargo bench --bench resize_merge
//!
//! Environment:
//! - `LORATOOL_BENCH_DIR`          inputs/outputs (default /tmp/loratool-bench); missing inputs are
//!   generated (same files as `cargo bench --bench gen_sdxl_lora`)
//! - `LORATOOL_BENCH_RUNS`         runs per loratool variant (default 5)
//! - `LORATOOL_BENCH_DENSE_RUNS`   runs per dense variant (default 1: each takes minutes)
//! - `LORATOOL_BENCH_ONLY`         comma-separated variant names to run (default: all)
//! - `LORATOOL_BENCH_SD15=1`       also run the SD1.5 fixture variants (`sd15_*`), like-for-like
//!   with sd-scripts' recorded runs
//! - `LORATOOL_BENCH_QUIET_WAIT=S`  before each run, wait up to S seconds for the machine to be
//!   idle (default 0: do not wait). Each run records
//!   `other_cpu_s`, the CPU time other processes used meanwhile.
//! - `LORATOOL_BENCH_NO_CHECK=1`   skip comparing loratool's outputs with the dense outputs
//! - `LORATOOL_BENCH_RESULTS`      where to write the JSON results (default
//!   `$LORATOOL_BENCH_DIR/resize_merge_results.json`)
//!
//! Every run of every variant is a fresh child process (this binary re-executed with
//! `--variant NAME`), so its peak RSS (`VmHWM` from /proc/self/status at the end) is that
//! variant's alone. A child reads its input(s) with `kohya::read` (memory-mapped), runs the
//! operation, writes the result with `kohya::write`, and prints one `RESULT {json}` line.
//!
//! The dense method is what sd-scripts does (resize_lora.py, svd_merge_lora.py): per module,
//! form `ΔW = Σ wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ` as a dense f32 `out × (in·kh·kw)` matrix and run a full SVD
//! on it (faer's thin SVD here, which is cheaper than torch's default `full_matrices=True`),
//! keep the top k. It runs modules in parallel with rayon, like loratool, and faer
//! parallelises inside each SVD as well, so it uses both cores.

#[path = "common/sdxl_lora.rs"]
mod sdxl_lora;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use loratool::adapter::{kohya, Adapter, LayerKind, LoraLayer, ReadOptions};
use loratool::linalg::{RankRule, SvSplit};
use loratool::ops::merge::{merge, MergeInput, MergeMethod, MergeOptions};
use loratool::ops::resize::{resize, ResizeOptions};
use loratool::tensor::{DType, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

/// The merge weights (kohya's `--ratios`), as in the SD1.5 fixture's svd_merge run.
const WEIGHTS: [f64; 2] = [0.6, 0.4];
const RESIZE_RANK: usize = 8;
const MERGE_RANK: usize = 16;
/// kohya's CLAMP_QUANTILE in svd_merge_lora.py / extract_lora_from_models.py.
const CLAMP_QUANTILE: f64 = 0.99;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Loratool,
    Dense,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// fixed-rank resize of one input
    Resize,
    /// exact weighted sum, truncated to the rank
    MergeSum,
    /// kohya svd_merge_lora: weighted sum, truncated SVD, quantile clamp, alpha = rank
    MergeSvd,
}

struct Variant {
    name: &'static str,
    op: Op,
    imp: Impl,
    /// input files: a name in the bench directory, `repo:PATH` (relative to the package root)
    /// or `shared:NAME` (in `$LORATOOL_SHARED_FIXTURES`, default /work/shared/fixtures/kohya)
    inputs: &'static [&'static str],
    /// run only when named in `LORATOOL_BENCH_ONLY` or when `LORATOOL_BENCH_SD15=1`
    sd15: bool,
    /// the reference tool's own output for this operation, to check against
    reference: Option<&'static str>,
    rank: usize,
    /// the variant it is compared with (ratio = other / this)
    baseline: Option<&'static str>,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "resize_r32_to_8_loratool",
        op: Op::Resize,
        imp: Impl::Loratool,
        inputs: &["sdxl_r32.safetensors"],
        rank: RESIZE_RANK,
        sd15: false,
        reference: None,
        baseline: Some("resize_r32_to_8_dense"),
    },
    Variant {
        name: "resize_r32_to_8_dense",
        op: Op::Resize,
        imp: Impl::Dense,
        inputs: &["sdxl_r32.safetensors"],
        rank: RESIZE_RANK,
        sd15: false,
        reference: None,
        baseline: None,
    },
    Variant {
        name: "resize_r64_to_8_loratool",
        op: Op::Resize,
        imp: Impl::Loratool,
        inputs: &["sdxl_r64.safetensors"],
        rank: RESIZE_RANK,
        sd15: false,
        reference: None,
        // the dense cost does not depend on the input rank (it is the SVD of out × in)
        baseline: Some("resize_r32_to_8_dense"),
    },
    Variant {
        name: "merge_sum_r16_loratool",
        op: Op::MergeSum,
        imp: Impl::Loratool,
        inputs: &["sdxl_r32.safetensors", "sdxl_r32_b.safetensors"],
        rank: MERGE_RANK,
        sd15: false,
        reference: None,
        baseline: Some("merge_sum_r16_dense"),
    },
    Variant {
        name: "merge_sum_r16_dense",
        op: Op::MergeSum,
        imp: Impl::Dense,
        inputs: &["sdxl_r32.safetensors", "sdxl_r32_b.safetensors"],
        rank: MERGE_RANK,
        sd15: false,
        reference: None,
        baseline: None,
    },
    Variant {
        name: "merge_svd_r16_loratool",
        op: Op::MergeSvd,
        imp: Impl::Loratool,
        inputs: &["sdxl_r32.safetensors", "sdxl_r32_b.safetensors"],
        rank: MERGE_RANK,
        sd15: false,
        reference: None,
        baseline: Some("merge_svd_r16_dense"),
    },
    Variant {
        name: "merge_svd_r32_r64_to_16_loratool",
        op: Op::MergeSvd,
        imp: Impl::Loratool,
        inputs: &["sdxl_r32.safetensors", "sdxl_r64.safetensors"],
        rank: MERGE_RANK,
        sd15: false,
        reference: None,
        baseline: None,
    },
    Variant {
        name: "merge_svd_r16_dense",
        op: Op::MergeSvd,
        imp: Impl::Dense,
        inputs: &["sdxl_r32.safetensors", "sdxl_r32_b.safetensors"],
        rank: MERGE_RANK,
        sd15: false,
        reference: None,
        baseline: None,
    },
    // like-for-like with sd-scripts' own runs (/work/shared/fixtures/kohya/timings.json)
    Variant {
        name: "sd15_resize_r4_to_2_loratool",
        op: Op::Resize,
        imp: Impl::Loratool,
        inputs: &["repo:fixtures/kohya/sd15_lora_r4_a2_c3lier.safetensors"],
        rank: 2,
        sd15: true,
        reference: Some("repo:fixtures/kohya/sd15_lora_r4_a2_c3lier_resized_r2.safetensors"),
        baseline: Some("sd15_resize_r4_to_2_dense"),
    },
    Variant {
        name: "sd15_resize_r4_to_2_dense",
        op: Op::Resize,
        imp: Impl::Dense,
        inputs: &["repo:fixtures/kohya/sd15_lora_r4_a2_c3lier.safetensors"],
        rank: 2,
        sd15: true,
        reference: Some("repo:fixtures/kohya/sd15_lora_r4_a2_c3lier_resized_r2.safetensors"),
        baseline: None,
    },
    Variant {
        name: "sd15_merge_svd_r4_loratool",
        op: Op::MergeSvd,
        imp: Impl::Loratool,
        inputs: &[
            "repo:fixtures/kohya/sd15_lora_r4_a2_c3lier.safetensors",
            "shared:sd15_lora_r8_a8_attn.safetensors",
        ],
        rank: 4,
        sd15: true,
        reference: Some("shared:sd15_svd_merge_0.6_0.4_r4.safetensors"),
        baseline: Some("sd15_merge_svd_r4_dense"),
    },
    Variant {
        name: "sd15_merge_svd_r4_dense",
        op: Op::MergeSvd,
        imp: Impl::Dense,
        inputs: &[
            "repo:fixtures/kohya/sd15_lora_r4_a2_c3lier.safetensors",
            "shared:sd15_lora_r8_a8_attn.safetensors",
        ],
        rank: 4,
        sd15: true,
        reference: Some("shared:sd15_svd_merge_0.6_0.4_r4.safetensors"),
        baseline: None,
    },
];

fn input_path(dir: &Path, name: &str) -> PathBuf {
    if let Some(p) = name.strip_prefix("repo:") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    } else if let Some(p) = name.strip_prefix("shared:") {
        std::env::var_os("LORATOOL_SHARED_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures/kohya"))
            .join(p)
    } else {
        dir.join(name)
    }
}

fn variant(name: &str) -> Res<&'static Variant> {
    VARIANTS
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| format!("unknown variant {name}").into())
}

fn out_path(dir: &Path, v: &Variant) -> PathBuf {
    dir.join(format!("out_{}.safetensors", v.name))
}

// ---------------------------------------------------------------- process statistics

/// `key:   N kB` from /proc/self/status, in bytes.
fn proc_status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// (user + system CPU seconds of this process) from /proc/self/stat.
fn self_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the ")" of the command name: state is field 3, utime 14, stime 15
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Busy CPU seconds of the whole machine so far (from /proc/stat).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the dense method

/// `Σ weight·up·down` as a dense column-major f32 `out × (in·kh·kw)` matrix.
fn dense_delta(terms: &[(f64, &LoraLayer)]) -> Mat<f32> {
    let first = terms[0].1;
    let m = first.out_features();
    let n = first.down.numel() / first.rank();
    let mut w = Mat::<f32>::zeros(m, n);
    for &(weight, layer) in terms {
        let r = layer.rank();
        let up = layer.up.to_f32();
        let down = layer.down.to_f32();
        matmul(
            w.as_mut(),
            Accum::Add,
            MatRef::from_row_major_slice(&up, m, r),
            MatRef::from_row_major_slice(&down, r, n),
            (weight * layer.scale()) as f32,
            faer::get_global_parallelism(),
        );
    }
    w
}

/// Top-`k` factors of the full SVD of `w`: `up = U_k·diag(S_k)` (m × k), `down = V_kᵀ`
/// (k × n), both row-major (kohya's split).
fn dense_truncated_svd(w: &Mat<f32>, k: usize) -> Res<(Vec<f32>, Vec<f32>)> {
    let (m, n) = (w.nrows(), w.ncols());
    let svd = w
        .thin_svd()
        .map_err(|e| format!("dense SVD of {m}×{n} failed: {e:?}"))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let k = k.min(m).min(n);
    let mut up = vec![0.0f32; m * k];
    for i in 0..m {
        for j in 0..k {
            up[i * k + j] = u[(i, j)] * s[j];
        }
    }
    let mut down = vec![0.0f32; k * n];
    for j in 0..k {
        for c in 0..n {
            down[j * n + c] = v[(c, j)];
        }
    }
    Ok((up, down))
}

/// torch.quantile(x, q) with 'linear' interpolation, by a full sort (as torch does).
fn quantile_sorted(values: &[f32], q: f64) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = (pos - lo as f64) as f32;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// One module by the dense method. Returns the new layer.
fn dense_layer(op: Op, terms: &[(f64, &LoraLayer)], rank: usize) -> Res<LoraLayer> {
    let first = terms[0].1;
    let w = dense_delta(terms);
    let (mut up, mut down) = dense_truncated_svd(&w, rank)?;
    drop(w);
    let k = up.len() / first.out_features();
    let alpha = match op {
        // resize_lora.py keeps the scale: new alpha = alpha·k/r, so up carries ΔW/scale
        Op::Resize => {
            let scale = first.scale() as f32;
            up.iter_mut().for_each(|x| *x /= scale);
            first.alpha * k as f64 / first.rank() as f64
        }
        Op::MergeSum => k as f64,
        // svd_merge_lora.py: clamp both factors to ±quantile(cat(up, down), 0.99); alpha = k
        Op::MergeSvd => {
            let mut all = up.clone();
            all.extend_from_slice(&down);
            let hi = quantile_sorted(&all, CLAMP_QUANTILE);
            up.iter_mut().for_each(|x| *x = x.clamp(-hi, hi));
            down.iter_mut().for_each(|x| *x = x.clamp(-hi, hi));
            k as f64
        }
    };
    let (down_shape, up_shape) = match first.kind {
        LayerKind::Conv => {
            let d = first.down.shape();
            (
                vec![k, d[1], d[2], d[3]],
                vec![first.out_features(), k, 1, 1],
            )
        }
        _ => (vec![k, down.len() / k], vec![first.out_features(), k]),
    };
    Ok(LoraLayer::new(
        "dense",
        Tensor::from_f32(down_shape, &down, DType::F16)?,
        Tensor::from_f32(up_shape, &up, DType::F16)?,
        alpha,
        first.kind,
    )?)
}

/// Per (out, cols) shape of a module: (modules, summed seconds).
type TimeByShape = BTreeMap<(usize, usize), (usize, f64)>;

/// The dense method over all modules (rayon over modules). Also returns, per (out, cols)
/// shape, (modules, summed seconds), to show where the time goes.
fn dense_op(
    op: Op,
    inputs: &[Adapter],
    weights: &[f64],
    rank: usize,
) -> Res<(Adapter, TimeByShape)> {
    let mut paths: Vec<&String> = inputs.iter().flat_map(|a| a.layers.keys()).collect();
    paths.sort();
    paths.dedup();
    let by_shape = Mutex::new(BTreeMap::<(usize, usize), (usize, f64)>::new());
    let layers: Vec<(String, LoraLayer)> = paths
        .par_iter()
        .map(|&path| {
            let t = Instant::now();
            let terms: Vec<(f64, &LoraLayer)> = inputs
                .iter()
                .zip(weights)
                .filter_map(|(a, &w)| a.layers.get(path).map(|l| (w, l)))
                .collect();
            let layer = dense_layer(op, &terms, rank)?;
            let first = terms[0].1;
            let shape = (first.out_features(), first.down.numel() / first.rank());
            let mut m = by_shape.lock().unwrap();
            let e = m.entry(shape).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
            Ok((path.clone(), layer))
        })
        .collect::<Res<_>>()?;
    let mut out = inputs[0].clone();
    out.layers = layers.into_iter().collect();
    Ok((out, by_shape.into_inner().unwrap()))
}

// ---------------------------------------------------------------- loratool

fn loratool_op(op: Op, inputs: &[Adapter], weights: &[f64], rank: usize) -> Res<Adapter> {
    match op {
        Op::Resize => {
            let opts = ResizeOptions {
                rank,
                conv_rank: None,
                rule: RankRule::Fixed,
                kohya_compat: false,
                alpha: None,
                split: SvSplit::Up,
            };
            Ok(resize(&inputs[0], &opts)?.0)
        }
        Op::MergeSum | Op::MergeSvd => {
            let inputs: Vec<MergeInput> = inputs
                .iter()
                .enumerate()
                .map(|(i, adapter)| MergeInput {
                    label: format!("input {i}"),
                    adapter,
                })
                .collect();
            let opts = MergeOptions {
                method: if op == Op::MergeSum {
                    MergeMethod::Sum
                } else {
                    MergeMethod::Svd
                },
                weights: weights.to_vec(),
                rank: Some(rank),
                clamp_quantile: (op == Op::MergeSvd).then_some(CLAMP_QUANTILE),
                ..MergeOptions::default()
            };
            Ok(merge(&inputs, &opts)?.0)
        }
    }
}

// ---------------------------------------------------------------- child: one run

fn run_child(name: &str, dir: &Path) -> Res<Value> {
    let v = variant(name)?;
    let t0 = Instant::now();
    let inputs: Vec<Adapter> = v
        .inputs
        .iter()
        .map(|f| kohya::read(&input_path(dir, f), ReadOptions::default()))
        .collect::<loratool::Result<_>>()?;
    let t_read = t0.elapsed().as_secs_f64();
    let weights: &[f64] = match v.op {
        Op::Resize => &[1.0],
        Op::MergeSum | Op::MergeSvd => &WEIGHTS[..inputs.len()],
    };
    let t1 = Instant::now();
    let mut shapes = BTreeMap::new();
    let out = match v.imp {
        Impl::Loratool => {
            // as the CLI runs it: rayon over modules, faer sequential inside each kernel
            faer::set_global_parallelism(faer::Par::Seq);
            loratool_op(v.op, &inputs, weights, v.rank)?
        }
        Impl::Dense => {
            let (out, s) = dense_op(v.op, &inputs, weights, v.rank)?;
            shapes = s;
            out
        }
    };
    let t_op = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let report = kohya::write(&out, &out_path(dir, v), &|_| {})?;
    let t_write = t2.elapsed().as_secs_f64();
    let total = t0.elapsed().as_secs_f64();
    let shapes: Vec<Value> = shapes
        .iter()
        .map(|(&(m, n), &(count, secs))| json!({"out": m, "cols": n, "modules": count, "seconds": secs}))
        .collect();
    Ok(json!({
        "variant": v.name,
        "modules": out.layers.len(),
        "read_s": t_read,
        "op_s": t_op,
        "write_s": t_write,
        "total_s": total,
        "cpu_s": self_cpu_seconds(),
        "peak_rss": proc_status_bytes("VmHWM"),
        "rss_anon_end": proc_status_bytes("RssAnon"),
        "rss_file_end": proc_status_bytes("RssFile"),
        "output_bytes": report.bytes,
        "dense_seconds_by_shape": shapes,
    }))
}

// ---------------------------------------------------------------- parent

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}

/// Wait (at most `max_s` seconds) until the machine has been idle (< 0.15 cores busy) for
/// 3 s, so another user's compile job does not land in the middle of a measurement.
fn wait_quiet(max_s: u64) {
    if max_s == 0 {
        return;
    }
    let start = Instant::now();
    let mut said = false;
    while start.elapsed().as_secs() < max_s {
        let b0 = machine_busy_seconds();
        std::thread::sleep(std::time::Duration::from_secs(3));
        if (machine_busy_seconds() - b0) / 3.0 < 0.15 {
            return;
        }
        if !said {
            eprintln!("  (machine busy, waiting up to {max_s} s for it to go quiet)");
            said = true;
        }
    }
    eprintln!("  (still busy after {max_s} s; measuring anyway, see other_cpu_s)");
}

/// Run one child; returns its RESULT json plus the machine's other CPU use meanwhile.
fn spawn(name: &str, dir: &Path) -> Res<Value> {
    wait_quiet(env_usize("LORATOOL_BENCH_QUIET_WAIT", 0) as u64);
    let exe = std::env::current_exe()?;
    let busy0 = machine_busy_seconds();
    let load_before = loadavg();
    let out = Command::new(exe)
        .args(["--variant", name])
        .env("LORATOOL_BENCH_DIR", dir)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let busy = machine_busy_seconds() - busy0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("variant {name} failed ({}): {stdout}", out.status).into());
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| format!("variant {name}: no RESULT line in {stdout}"))?;
    let mut v: Value = serde_json::from_str(line)?;
    let cpu = v["cpu_s"].as_f64().unwrap_or(0.0);
    v["other_cpu_s"] = json!((busy - cpu).max(0.0));
    v["load_before"] = json!(load_before);
    Ok(v)
}

/// Compare output file `pa` with the file `pb` taken as the truth, module by module.
fn check(pa: &Path, pb: &Path) -> Res<Value> {
    if !pa.exists() || !pb.exists() {
        return Ok(Value::Null);
    }
    let la = kohya::read(pa, ReadOptions::default())?;
    let lb = kohya::read(pb, ReadOptions::default())?;
    let mut diffs: Vec<(f64, String)> = lb
        .layers
        .par_iter()
        .map(|(p, l)| {
            let d = la.layers.get(p).map_or(f64::INFINITY, |x| {
                loratool::testing::layer_rel_diff(x, &[(l, 1.0)])
            });
            (d, p.clone())
        })
        .collect();
    diffs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut vals: Vec<f64> = diffs.iter().map(|d| d.0).collect();
    let worst = diffs.last().cloned().unwrap_or_default();
    Ok(json!({
        "modules": diffs.len(),
        "median_rel_diff": median(&mut vals),
        "max_rel_diff": worst.0,
        "max_at": worst.1,
    }))
}

fn parent(dir: &Path) -> Res<()> {
    sdxl_lora::generate_all(dir, true)?;
    let runs = env_usize("LORATOOL_BENCH_RUNS", 5);
    let dense_runs = env_usize("LORATOOL_BENCH_DENSE_RUNS", 1);
    let only: Option<Vec<String>> = std::env::var("LORATOOL_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let sd15 = std::env::var("LORATOOL_BENCH_SD15").is_ok_and(|v| v == "1");
    let mut results: BTreeMap<&str, Value> = BTreeMap::new();
    for v in VARIANTS {
        let named = only.as_ref().map(|o| o.iter().any(|x| x == v.name));
        let run = match named {
            Some(n) => n,
            None => !v.sd15 || sd15,
        };
        if !run {
            continue;
        }
        let n = match v.imp {
            Impl::Loratool => runs,
            Impl::Dense => dense_runs,
        };
        let input_bytes: u64 = v
            .inputs
            .iter()
            .map(|f| {
                std::fs::metadata(input_path(dir, f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        let mut samples = Vec::new();
        let mut failed = None;
        for i in 0..n {
            eprintln!("[{}] run {}/{n} ...", v.name, i + 1);
            match spawn(v.name, dir) {
                Ok(s) => {
                    eprintln!(
                        "[{}]   op {:.3} s, total {:.3} s, peak RSS {:.1} MiB, other CPU {:.1} s",
                        v.name,
                        s["op_s"].as_f64().unwrap_or(f64::NAN),
                        s["total_s"].as_f64().unwrap_or(f64::NAN),
                        mib(s["peak_rss"].as_f64().unwrap_or(f64::NAN)),
                        s["other_cpu_s"].as_f64().unwrap_or(f64::NAN),
                    );
                    samples.push(s)
                }
                Err(e) => {
                    eprintln!("[{}]   skipped: {e}", v.name);
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let col = |k: &str| -> Vec<f64> { samples.iter().filter_map(|s| s[k].as_f64()).collect() };
        let summary = json!({
            "runs": samples.len(),
            "inputs": v.inputs,
            "input_bytes": input_bytes,
            "rank": v.rank,
            "median_op_s": median(&mut col("op_s")),
            "median_total_s": median(&mut col("total_s")),
            "median_read_s": median(&mut col("read_s")),
            "median_write_s": median(&mut col("write_s")),
            "median_cpu_s": median(&mut col("cpu_s")),
            "op_s": col("op_s"),
            "total_s": col("total_s"),
            "max_peak_rss": col("peak_rss").into_iter().fold(0.0, f64::max),
            "peak_rss_over_input": col("peak_rss").into_iter().fold(0.0, f64::max) / input_bytes as f64,
            "other_cpu_s": col("other_cpu_s"),
            "samples": samples,
            "error": failed,
        });
        results.insert(v.name, summary);
    }

    // ratios and correctness checks
    let mut report = json!({
        "machine": {
            "loadavg_end": loadavg(),
            "threads": rayon::current_num_threads(),
        },
        "variants": results.clone(),
    });
    println!();
    println!(
        "{:<30} {:>4} {:>9} {:>9} {:>9} {:>9} {:>12} {:>7} {:>8} {:>8} {:>8}",
        "variant",
        "runs",
        "op s",
        "total s",
        "cpu s",
        "other s",
        "peak RSS",
        "RSS/in",
        "x op",
        "x total",
        "x cpu"
    );
    for v in VARIANTS {
        let Some(r) = results.get(v.name) else {
            continue;
        };
        if r["runs"].as_u64() == Some(0) {
            println!("{:<26} skipped: {}", v.name, r["error"]);
            continue;
        }
        let ratio = |key: &str| {
            v.baseline
                .and_then(|b| results.get(b))
                .and_then(|b| Some(b[key].as_f64()? / r[key].as_f64()?))
        };
        let (sp, sp_total) = (ratio("median_op_s"), ratio("median_total_s"));
        let sp_cpu = ratio("median_cpu_s");
        report["variants"][v.name]["speedup_op"] = json!(sp);
        report["variants"][v.name]["speedup_total"] = json!(sp_total);
        report["variants"][v.name]["speedup_cpu"] = json!(sp_cpu);
        let x = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.0}x"));
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<30} {:>4} {:>9.3} {:>9.3} {:>9.2} {:>9.1} {:>8.1} MiB {:>6.2}x {:>8} {:>8} {:>8}",
            v.name,
            r["runs"],
            f("median_op_s"),
            f("median_total_s"),
            f("median_cpu_s"),
            r["other_cpu_s"].as_array().map_or(f64::NAN, |a| a
                .iter()
                .filter_map(|x| x.as_f64())
                .fold(0.0, f64::max)),
            mib(f("max_peak_rss")),
            f("peak_rss_over_input"),
            x(sp),
            x(sp_total),
            x(sp_cpu),
        );
    }
    println!(
        "(medians over runs; op = the operation alone, total = read + op + write; cpu = user+sys \
         seconds of the child; other = max CPU seconds other processes used during one run; \
         peak RSS = max VmHWM; x = dense / loratool)"
    );
    if std::env::var("LORATOOL_BENCH_NO_CHECK").is_err() {
        println!();
        let ran = |name: &str| {
            results
                .get(name)
                .is_some_and(|r| r["runs"].as_u64().unwrap_or(0) > 0)
        };
        for v in VARIANTS.iter().filter(|v| ran(v.name)) {
            let mut against: Vec<(String, PathBuf)> = Vec::new();
            if let Some(b) = v.baseline.map(variant).transpose()? {
                if v.inputs == b.inputs && ran(b.name) {
                    against.push((b.name.to_string(), out_path(dir, b)));
                }
            }
            if let Some(r) = v.reference {
                against.push((r.to_string(), input_path(dir, r)));
            }
            for (what, path) in against {
                if !path.exists() {
                    continue;
                }
                let c = check(&out_path(dir, v), &path)?;
                println!(
                    "check {} against {}: {} modules, ‖ΔW − ΔW_ref‖/‖ΔW_ref‖ median {:.2e}, max {:.2e} ({})",
                    v.name,
                    what,
                    c["modules"],
                    c["median_rel_diff"].as_f64().unwrap_or(f64::NAN),
                    c["max_rel_diff"].as_f64().unwrap_or(f64::NAN),
                    c["max_at"].as_str().unwrap_or("")
                );
                report["checks"][v.name][what] = c;
            }
        }
    }
    let json_path = std::env::var_os("LORATOOL_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("resize_merge_results.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    println!("\nfull results: {}", json_path.display());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = sdxl_lora::bench_dir();
    let result = match args.iter().position(|a| a == "--variant") {
        Some(i) => {
            let name = args.get(i + 1).cloned().unwrap_or_default();
            run_child(&name, &dir).map(|v| println!("RESULT {v}"))
        }
        None => parent(&dir),
    };
    if let Err(e) = result {
        eprintln!("resize_merge: {e}");
        std::process::exit(1);
    }
}
