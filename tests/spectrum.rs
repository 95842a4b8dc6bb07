//! `info --spectrum` / `--plot`: the data behind the table and the plot checked against dense
//! SVDs of each module's ΔW, the marked ranks against what `resize --method sv_fro` picks, and
//! the pictures decoded.

mod common;

use common::*;
use loratool::linalg::RankRule;
use loratool::ops::resize::{resize, ResizeOptions};
use loratool::ops::spectrum::{block_groups, spectrum};
use std::collections::BTreeMap;

/// Per group, Σ over modules of σᵢ² of the dense ΔW (scale included), per index i.
fn dense_group_energy(adapter: &loratool::adapter::Adapter) -> BTreeMap<String, Vec<f64>> {
    let groups = block_groups(adapter.layers.keys().map(String::as_str));
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (path, layer) in &adapter.layers {
        let dense = dense_delta(layer);
        let cols = dense.len() / layer.out_features();
        let s = loratool::testing::singular_values(&dense, layer.out_features(), cols);
        let e = out.entry(groups[path].clone()).or_default();
        if e.len() < s.len() {
            e.resize(s.len(), 0.0);
        }
        for (a, x) in e.iter_mut().zip(&s) {
            *a += x * x;
        }
    }
    out
}

#[test]
fn spectrum_matches_dense_svds_and_marks_resizes_ranks() {
    for fx in [
        "gen_sd15_kohya.safetensors",
        "peft/plain",
        "peft/rslora_patterns",
    ] {
        let adapter = read_any(&fixture(fx));
        let sp = spectrum(&adapter, 0.9).unwrap();
        let dense = dense_group_energy(&adapter);
        assert_eq!(sp.groups.len(), dense.len(), "{fx}");
        for g in &sp.groups {
            let e = &dense[&g.group];
            let total: f64 = e.iter().sum();
            assert_eq!(g.energy.len(), g.max_rank + 1);
            for (k, &got) in g.energy.iter().enumerate() {
                let kept: f64 = e.iter().take(k).sum();
                let want = (kept / total).sqrt();
                assert!(
                    (got - want).abs() < 1e-5,
                    "{fx} {} r{k}: {got} vs {want}",
                    g.group
                );
            }
            for (&r, &got) in sp.ranks.iter().zip(&g.kept) {
                assert_eq!(got, g.energy[r.min(g.max_rank)]);
            }
            assert!((g.energy[g.max_rank] - 1.0).abs() < 1e-6);
        }
        // the marked rank is what resize picks with the same threshold and a cap at or above
        // every module's rank
        let cap = adapter.layers.values().map(|l| l.rank()).max().unwrap();
        let opts = ResizeOptions {
            rank: cap,
            conv_rank: None,
            rule: RankRule::SvFro(0.9),
            kohya_compat: false,
            alpha: None,
            split: loratool::linalg::SvSplit::Up,
        };
        let (_, report) = resize(&adapter, &opts).unwrap();
        let groups = block_groups(adapter.layers.keys().map(String::as_str));
        let mut max: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &report {
            let e = max.entry(groups[&m.path].as_str()).or_default();
            *e = (*e).max(m.new_rank);
        }
        for g in &sp.groups {
            assert_eq!(g.sv_fro_max, max[g.group.as_str()], "{fx} {}", g.group);
        }
    }
}

#[test]
fn plots_are_written_as_svg_and_png() {
    let dir = tempdir();
    let sd = fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors");
    let svg = dir.path().join("s.svg");
    let png = dir.path().join("s.png");
    let out = run_ok(&["info", s(&sd), "--plot", s(&svg)]);
    assert!(
        out.contains("spectrum") && out.contains("unet.up_blocks.3"),
        "{out}"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    for g in ["text_encoder", "unet.mid_block", "unet.down_blocks.0"] {
        assert!(text.contains(g), "{g} not labelled");
    }
    assert!(text.contains("<polyline"), "no curves");
    run_ok(&["info", s(&sd), "--plot", s(&png), "--sv-fro", "0.8"]);
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 640));
    let coloured = buf[..info.buffer_size()]
        .chunks(3)
        .filter(|p| !(p[0] == p[1] && p[1] == p[2]))
        .count();
    assert!(
        coloured > 2000,
        "the curves are drawn in colour ({coloured} pixels)"
    );
    // anything else is refused, and nothing is written
    let o = loratool(&["info", s(&sd), "--plot", s(&dir.path().join("s.pdf"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(".svg or .png"), "{}", stderr(&o));
    assert!(!dir.path().join("s.pdf").exists());
    // a base model has no spectrum
    let o = loratool(&["info", s(&fixture("tiny_llama")), "--spectrum"]);
    assert_eq!(o.status.code(), Some(1));
}
