//! Single-thread throughput of each block quantizer on in-memory f32 rows: the kernels alone,
//! without reading, converting or writing a file (`quantize_vs_llama` measures the whole
//! command). Input: 16 Mi pseudo-random values (a fixed xorshift, roughly Gaussian), rows of
//! 4096. Prints the median of `LORATOOL_BENCH_RUNS` (default 7) passes per type, as ns per
//! 32 values and GB/s of f32 input.
//!
//!     cargo bench --bench quant_kernels
use loratool::quant::{quantize_into, QuantType};
use std::time::Instant;

fn main() {
    let runs: usize = std::env::var("LORATOOL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let n = 16 << 20;
    let row = 4096;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    // sum of four uniforms: roughly Gaussian, like trained weights
    let data: Vec<f32> = (0..n)
        .map(|_| (next() + next() + next() + next() - 2.0) * 0.02)
        .collect();
    let only: Option<Vec<String>> = std::env::var("LORATOOL_BENCH_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    println!("{n} values, rows of {row}, 1 thread, median of {runs}");
    println!("{:<6} {:>12} {:>8}", "type", "ns/32 vals", "GB/s");
    for ty in QuantType::ALL {
        if ty.block_size() == 1 {
            continue;
        }
        if let Some(o) = &only {
            if !o.iter().any(|c| c == &ty.to_string()) {
                continue;
            }
        }
        let Ok(bytes) = ty.row_bytes(row) else {
            continue;
        };
        let mut out = vec![0u8; bytes * (n / row)];
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                pool.install(|| {
                    let t = Instant::now();
                    quantize_into(ty, &data, row, &mut out).expect("quantize");
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let med = times[runs / 2];
        println!(
            "{:<6} {:>12.1} {:>8.2}",
            ty.to_string(),
            med * 1e9 / (n / 32) as f64,
            (n * 4) as f64 / med / 1e9
        );
    }
}
