//! Writes the synthetic SDXL kohya LoRAs the benchmarks read (see `common/sdxl_lora.rs` for
//! what they contain):
//!
//!     cargo bench --bench gen_sdxl_lora                # into $LORATOOL_BENCH_DIR or /tmp/loratool-bench
//!     cargo bench --bench gen_sdxl_lora -- DIR         # into DIR
//!
//! Output: `sdxl_r32.safetensors` (rank 32, seed 1), `sdxl_r32_b.safetensors` (rank 32, seed 2)
//! and `sdxl_r64.safetensors` (rank 64, seed 1). Existing files are overwritten; the content
//! depends only on the seed. These files are benchmark inputs: never commit them.

#[path = "common/sdxl_lora.rs"]
mod sdxl_lora;

use std::path::PathBuf;

fn main() {
    // cargo passes `--bench` to harness = false targets; any other argument is the directory
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(sdxl_lora::bench_dir);
    match sdxl_lora::generate_all(&dir, false) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
        }
        Err(e) => {
            eprintln!("gen_sdxl_lora: {e}");
            std::process::exit(1);
        }
    }
}
