//! `resize` against sd-scripts' resize_lora.py (its output file and its log) and against a
//! dense reference computed here.

mod common;

use common::*;
use loratool::adapter::kohya;
use loratool::adapter::{peft, ReadOptions};
use loratool::io::SafetensorsFile;
use loratool::linalg::{RankRule, SvSplit};
use loratool::ops::resize::{resize, ResizeOptions};
use std::collections::BTreeMap;

const STRICT: ReadOptions = ReadOptions {
    skip_unknown: false,
    layout_only: false,
};
const C3LIER: &str = "kohya/sd15_lora_r4_a2_c3lier.safetensors";
const KOHYA_R2: &str = "kohya/sd15_lora_r4_a2_c3lier_resized_r2.safetensors";

fn fixed(rank: usize) -> ResizeOptions {
    ResizeOptions {
        rank,
        conv_rank: None,
        rule: RankRule::Fixed,
        kohya_compat: false,
        alpha: None,
        split: SvSplit::Up,
    }
}

fn fro(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Per-module "fro retained" percentages printed by sd-scripts (kohya name → %).
fn kohya_log() -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(fixture("kohya/logs/resize_lora_r4_to_r2.log")).unwrap();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" | ")?;
            let pct = rest.split("fro retained: ").nth(1)?.split('%').next()?;
            Some((name.trim().to_string(), pct.parse().ok()?))
        })
        .collect()
}

#[test]
fn resize_matches_sd_scripts_product_by_product() {
    let a = kohya::read(&fixture(C3LIER), STRICT).unwrap();
    let theirs = kohya::read(&fixture(KOHYA_R2), STRICT).unwrap();
    let (ours, report) = resize(&a, &fixed(2)).unwrap();
    assert_eq!(ours.layers.len(), theirs.layers.len());
    let mut worst = 0.0f64;
    for (p, l) in &ours.layers {
        let t = &theirs.layers[p];
        assert_eq!((l.rank(), l.alpha), (t.rank(), t.alpha), "{p}");
        worst = worst.max(rel_fro_diff(l, t));
    }
    // both are the optimal rank-2 approximation, stored in fp16
    assert!(worst < 2e-3, "worst relative Frobenius difference {worst}");

    // the retention sd-scripts printed, module by module (it rounds to 0.1%)
    let log = kohya_log();
    assert_eq!(log.len(), 350);
    let table = loratool::formats::sd::table("sd15").unwrap();
    for m in &report {
        let name = &table.by_canonical(&m.path).unwrap().kohya;
        let theirs = log[name];
        assert!(
            (m.fro_retained * 100.0 - theirs).abs() <= 0.051,
            "{name}: ours {:.3}% theirs {theirs}%",
            m.fro_retained * 100.0
        );
    }
    let mean = report.iter().map(|m| m.fro_retained).sum::<f64>() / report.len() as f64;
    assert!(
        (mean * 100.0 - 88.99).abs() < 0.005,
        "sd-scripts printed 88.99%, ours {mean}"
    );
}

#[test]
fn resize_to_kohya_updates_metadata_and_hashes_like_sd_scripts() {
    let dir = tempdir();
    let out = dir.path().join("r2.safetensors");
    let o = loratool(&[
        "resize",
        fixture(C3LIER).to_str().unwrap(),
        "--rank",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ours = SafetensorsFile::open(&out).unwrap();
    let theirs = SafetensorsFile::open(&fixture(KOHYA_R2)).unwrap();
    for k in [
        "ss_network_dim",
        "ss_network_alpha",
        "ss_training_comment",
        "ss_network_args",
    ] {
        assert_eq!(ours.metadata().get(k), theirs.metadata().get(k), "{k}");
    }
    use sha2::{Digest, Sha256};
    let data = hex::encode(Sha256::digest(ours.data_region()));
    assert_eq!(ours.metadata().get("sshs_model_hash"), Some(&data));
    assert!(
        stdout(&o).contains("mean Frobenius kept 88.99%"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn resize_at_or_above_the_true_rank_is_exact_for_every_module() {
    let a = kohya::read(&fixture("gen_sdxl_kohya.safetensors"), STRICT).unwrap();
    let (b, report) = resize(&a, &fixed(64)).unwrap();
    for (p, l) in &a.layers {
        let lb = &b.layers[p];
        assert_eq!(lb.rank(), l.rank(), "{p}: rank never grows");
        assert_eq!(lb.scale(), l.scale(), "{p}: scale kept");
        let (wa, wb) = (dense_delta(l), dense_delta(lb));
        let diff: Vec<f64> = wa.iter().zip(&wb).map(|(x, y)| x - y).collect();
        assert!(fro(&diff) / fro(&wa) < 1e-5, "{p}");
    }
    assert!(report.iter().all(|m| m.rel_error < 1e-5));
}

#[test]
fn dynamic_resize_kohya_compat_keeps_one_more_than_the_exact_criterion() {
    let a = kohya::read(&fixture(C3LIER), STRICT).unwrap();
    let mut o = fixed(4);
    o.rule = RankRule::SvFro(0.9);
    let (_, exact) = resize(&a, &o).unwrap();
    o.kohya_compat = true;
    let (_, compat) = resize(&a, &o).unwrap();
    let mut shifted = 0;
    for (e, c) in exact.iter().zip(&compat) {
        assert!(
            e.fro_retained >= 0.9 - 1e-9,
            "{}: exact rule must reach 90%",
            e.path
        );
        // sd-scripts: one more than the exact count, capped by --rank only (a rank-2 module
        // can come out at rank 3, with a zero direction)
        assert_eq!(c.new_rank, (e.new_rank + 1).min(4), "{}", e.path);
        shifted += (c.new_rank != e.new_rank) as usize;
    }
    assert!(shifted > 0);
}

#[test]
fn peft_output_records_per_module_ranks_in_rank_pattern() {
    let a = peft::read(&fixture("peft/rslora_patterns"), STRICT).unwrap();
    let mut o = fixed(6);
    o.rule = RankRule::SvFro(0.95);
    let (b, _) = resize(&a, &o).unwrap();
    let dir = tempdir();
    peft::write(&b, dir.path(), &|_| {}).unwrap();
    let c = peft::read(dir.path(), STRICT).unwrap();
    for (p, l) in &b.layers {
        assert_eq!(c.layers[p].rank(), l.rank(), "{p}");
        assert!(
            (c.layers[p].scale() - l.scale()).abs() < 1e-12 * l.scale().abs(),
            "{p}"
        );
    }
}
