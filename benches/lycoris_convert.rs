//! LyCORIS → LoRA r32 on every SDXL module: loratool's conversion (LoHa: face-splitting
//! product, then the exact SVD of the product, factored when its inner rank is below
//! min(out, in), dense otherwise; LoKr: the two Kronecker factors' SVDs) against the dense
//! route (form ΔW in f32, full thin SVD with faer, keep 32), in the same run.
//!
//!     cargo bench --bench lycoris_convert
//!
//! Environment: `LORATOOL_BENCH_RUNS` (runs of each loratool variant, default 3),
//! `LORATOOL_BENCH_DENSE_RUNS` (default 1), `LORATOOL_BENCH_ONLY` (comma-separated variants),
//! `LORATOOL_BENCH_STRIDE` (default 1: every module; `k`: every k-th module in table order, the
//! same subset for every variant, for loaded machines).
//!
//! Inputs are built in memory in each child (not timed): one LyCORIS module of rank 32 per
//! module kohya's LoCon targets in SDXL (1052, the rows of `benches/common/sdxl_lora.rs`), f32,
//! LoHa `hada_w{1,2}_{a,b}` (conv kernels flattened, as LyCORIS stores them) and LoKr with
//! LyCORIS' defaults (`factor=-1`, `lokr_w1` full, `lokr_w2` factored when
//! `32 < max(b, d)/2`, else full — as `LokrModule` decides). Every variant runs in a fresh
//! child process; its peak RSS is its `VmHWM`, `baseline` is the inputs alone.

#[path = "common/sdxl_lora.rs"]
mod sdxl_lora;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use loratool::adapter::lycoris::{self, ModuleTensors, Options, Target};
use loratool::formats::sd;
use loratool::tensor::{DType, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;

const RANK: usize = 32;

fn normals(rng: &mut ChaCha8Rng, len: usize, std: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect()
}

/// LyCORIS `factorization(dim, -1)`: the most balanced divisor pair `m ≤ n`.
fn factorization(dim: usize) -> (usize, usize) {
    let (mut m, mut n) = (1, dim);
    while m < n {
        let mut new_m = m + 1;
        while !dim.is_multiple_of(new_m) {
            new_m += 1;
        }
        let new_n = dim / new_m;
        if new_m + new_n > m + n {
            break;
        }
        (m, n) = (new_m, new_n);
    }
    (m.min(n), m.max(n))
}

struct Module {
    name: String,
    target: Target,
    tensors: ModuleTensors,
}

fn t(shape: Vec<usize>, v: &[f32]) -> Tensor {
    Tensor::from_f32(shape, v, DType::F32).expect("tensor")
}

fn inputs(algo: &str) -> Vec<Module> {
    let table = sd::table("sdxl").expect("sdxl table");
    let rows: Vec<&sd::ModuleRow> = table
        .rows
        .iter()
        .filter(|r| sdxl_lora::targeted(&r.canonical))
        .collect();
    let stride: usize = std::env::var("LORATOOL_BENCH_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rows: Vec<&sd::ModuleRow> = rows.into_iter().step_by(stride).collect();
    rows.par_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut rng = ChaCha8Rng::seed_from_u64(0x1c0_715 ^ i as u64);
            let k = row.kh * row.kw;
            let inp = row.in_ * k;
            let mut tensors = ModuleTensors::new();
            if algo == "loha" {
                let s = 1.0 / (inp as f32).sqrt();
                for w in ["1", "2"] {
                    let a = normals(&mut rng, row.out * RANK, 0.1);
                    let b = normals(&mut rng, RANK * inp, s);
                    tensors.insert(
                        if w == "1" { "hada_w1_a" } else { "hada_w2_a" },
                        t(vec![row.out, RANK], &a),
                    );
                    tensors.insert(
                        if w == "1" { "hada_w1_b" } else { "hada_w2_b" },
                        t(vec![RANK, inp], &b),
                    );
                }
            } else {
                let (a, b) = factorization(row.out);
                let (c, d) = factorization(row.in_);
                let w1 = normals(&mut rng, a * c, 0.1);
                tensors.insert("lokr_w1", t(vec![a, c], &w1));
                if RANK as f64 >= b.max(d) as f64 / 2.0 {
                    let w2 = normals(&mut rng, b * d * k, 0.1);
                    tensors.insert("lokr_w2", t(vec![b, d, row.kh, row.kw], &w2));
                } else {
                    let w2a = normals(&mut rng, b * RANK, 0.1);
                    let w2b = normals(&mut rng, RANK * d * k, 0.1);
                    tensors.insert("lokr_w2_a", t(vec![b, RANK], &w2a));
                    tensors.insert("lokr_w2_b", t(vec![RANK, d * k], &w2b));
                }
            }
            tensors.insert("alpha", Tensor::scalar(16.0, DType::F32).expect("alpha"));
            Module {
                name: row.kohya.clone(),
                target: Target {
                    kind: row.kind,
                    out: row.out,
                    in_: row.in_,
                    kh: row.kh,
                    kw: row.kw,
                },
                tensors,
            }
        })
        .collect()
}

fn mat(tensor: &Tensor, rows: usize) -> Mat<f32> {
    let v = tensor.to_f32();
    let cols = v.len() / rows;
    MatRef::from_row_major_slice(&v, rows, cols).to_owned()
}

fn product(a: &Mat<f32>, b: &Mat<f32>) -> Mat<f32> {
    let mut p = Mat::<f32>::zeros(a.nrows(), b.ncols());
    matmul(
        p.as_mut(),
        Accum::Replace,
        a.as_ref(),
        b.as_ref(),
        1.0f32,
        faer::Par::Seq,
    );
    p
}

/// The dense route: ΔW in f32, full thin SVD, keep RANK; returns the dropped energy fraction.
fn dense(m: &Module) -> f64 {
    let tg = m.target;
    let (out, inp) = (tg.out, tg.in_ * tg.kh * tg.kw);
    let tn = &m.tensors;
    let dw = if let Some(w1a) = tn.get("hada_w1_a") {
        let w1 = product(&mat(w1a, out), &mat(&tn["hada_w1_b"], RANK));
        let w2 = product(&mat(&tn["hada_w2_a"], out), &mat(&tn["hada_w2_b"], RANK));
        Mat::<f32>::from_fn(out, inp, |i, j| w1[(i, j)] * w2[(i, j)])
    } else {
        let w1 = mat(&tn["lokr_w1"], tn["lokr_w1"].shape()[0]);
        let w2 = match tn.get("lokr_w2") {
            Some(w) => mat(w, w.shape()[0]),
            None => product(
                &mat(&tn["lokr_w2_a"], tn["lokr_w2_a"].shape()[0]),
                &mat(&tn["lokr_w2_b"], RANK),
            ),
        };
        let (b, d) = (w2.nrows(), w2.ncols());
        Mat::<f32>::from_fn(out, inp, |i, j| w1[(i / b, j / d)] * w2[(i % b, j % d)])
    };
    let svd = dw.thin_svd().expect("svd");
    let s: Vec<f64> = svd
        .S()
        .column_vector()
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    // the kept factors, as a LoRA: U_k·S_k and V_kᵀ
    let k = RANK.min(s.len());
    let up = Mat::<f32>::from_fn(out, k, |i, j| svd.U()[(i, j)] * s[j] as f32);
    let down = svd.V().subcols(0, k).transpose().to_owned();
    std::hint::black_box((up, down));
    let total: f64 = s.iter().map(|x| x * x).sum();
    s.iter().skip(k).map(|x| x * x).sum::<f64>() / total
}

fn loratool(m: &Module) -> f64 {
    let opts = Options {
        max_rank: Some(RANK),
        target: Some(m.target),
        ..Options::lycoris()
    };
    let c = lycoris::convert(&m.name, &m.tensors, &opts).expect("convert");
    std::hint::black_box(&c.layer);
    c.origin.truncation.map_or(0.0, |t| t.dropped_energy)
}

fn vm_hwm() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let kb = l
                    .strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim();
                kb.parse::<u64>().ok()
            })
        })
        .unwrap_or(0)
        * 1024
}

fn child(variant: &str) -> Value {
    let (algo, route) = variant.split_once('_').expect("variant algo_route");
    let mods = inputs(algo);
    let input_bytes: usize = mods
        .iter()
        .map(|m| m.tensors.values().map(|t| t.byte_len()).sum::<usize>())
        .sum();
    let mut order: Vec<&Module> = mods.iter().collect();
    // largest modules first, as loratool's ops schedule them
    order.sort_by_key(|m| {
        std::cmp::Reverse(m.target.out * m.target.in_ * m.target.kh * m.target.kw)
    });
    let start = Instant::now();
    let dropped: Vec<f64> = match route {
        "baseline" => vec![],
        "loratool" => order.par_iter().map(|m| loratool(m)).collect(),
        _ => order.par_iter().map(|m| dense(m)).collect(),
    };
    let secs = start.elapsed().as_secs_f64();
    json!({"variant": variant, "modules": mods.len(), "input_bytes": input_bytes,
           "op_s": secs, "peak_rss": vm_hwm(), "dropped": dropped})
}

fn run(variant: &str) -> Value {
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe)
        .args(["--variant", variant])
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{variant}: no result; stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).expect("json")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--variant") {
        println!("RESULT {}", child(&args[i + 1]));
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("LORATOOL_BENCH_RUNS", 3);
    let dense_runs = env("LORATOOL_BENCH_DENSE_RUNS", 1);
    let only = std::env::var("LORATOOL_BENCH_ONLY").unwrap_or_default();
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!("| variant | modules | input | op median | peak RSS | runs |");
    println!("|---|---|---|---|---|---|");
    let mut dropped = std::collections::BTreeMap::new();
    for v in [
        "loha_baseline",
        "loha_loratool",
        "loha_dense",
        "lokr_baseline",
        "lokr_loratool",
        "lokr_dense",
    ] {
        if !only.is_empty() && !only.split(',').any(|o| o == v) {
            continue;
        }
        let n = if v.ends_with("dense") {
            dense_runs
        } else {
            runs
        };
        let results: Vec<Value> = (0..n).map(|_| run(v)).collect();
        let op = median(
            results
                .iter()
                .map(|r| r["op_s"].as_f64().unwrap_or(0.0))
                .collect(),
        );
        let rss = results
            .iter()
            .map(|r| r["peak_rss"].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max);
        println!(
            "| {v} | {} | {:.1} MiB | {op:.3} s | {:.1} MiB | {n} |",
            results[0]["modules"],
            mib(results[0]["input_bytes"].as_f64().unwrap_or(0.0)),
            mib(rss)
        );
        dropped.insert(v.to_string(), results[0]["dropped"].clone());
    }
    // both routes keep the optimal rank-32 truncation: compare the energy each drops per module
    for algo in ["loha", "lokr"] {
        if let (Some(Value::Array(a)), Some(Value::Array(b))) = (
            dropped.get(&format!("{algo}_loratool")),
            dropped.get(&format!("{algo}_dense")),
        ) {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0)).abs())
                .fold(0.0, f64::max);
            let mean =
                a.iter().map(|x| x.as_f64().unwrap_or(0.0)).sum::<f64>() / a.len().max(1) as f64;
            println!("{algo}: mean dropped energy (loratool) {mean:.4}, max |loratool − dense| per module {diff:.2e}");
        }
    }
}
