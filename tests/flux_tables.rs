//! The Flux.1 table against a LoRA made by PEFT + diffusers (fixtures/flux/, made by
//! fixtures/gen/make_flux_fixtures.py on a reduced-depth FluxTransformer2DModel at Flux.1-dev
//! widths): every module is a table row of the same shape, and going to the BFL / kohya layout
//! (fuse q,k,v(,mlp) into `qkv` / `linear1`, swap `norm_out` halves) and back is exact, checked
//! against dense products computed here.

use loratool::adapter::codec::{read_adapter, ReadContext};
use loratool::adapter::fused::{fuse, split, swap_halves, FusePart};
use loratool::adapter::{Format, LoraLayer};
use loratool::formats::dit::{self, Rows};
use std::path::Path;

/// Dense `scale·B·A`, row-major.
fn dense(l: &LoraLayer) -> Vec<f64> {
    let (out, r) = (l.out_features(), l.rank());
    let a = l.down.to_f64();
    let b = l.up.to_f64();
    let n = a.len() / r;
    let mut d = vec![0.0; out * n];
    for i in 0..out {
        for k in 0..r {
            let bik = l.scale() * b[i * r + k];
            for j in 0..n {
                d[i * n + j] += bik * a[k * n + j];
            }
        }
    }
    d
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    assert!(
        (num / den).sqrt() < 1e-6,
        "{what}: relative error {}",
        (num / den).sqrt()
    );
}

#[test]
fn peft_flux_lora_maps_onto_the_table_and_fuses_exactly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/flux");
    let adapter = read_adapter(&path, None, &ReadContext::default()).unwrap();
    assert_eq!(adapter.meta.source_format, Some(Format::Diffusers));
    let table = dit::table("flux1").unwrap();
    for (p, l) in &adapter.layers {
        let row = table
            .by_canonical(p)
            .unwrap_or_else(|| panic!("{p} is not in flux1.tsv"));
        assert_eq!(
            (l.out_features(), l.in_features()),
            (row.out, row.in_),
            "{p}"
        );
    }
    // every original (BFL) module whose parts the LoRA covers
    let mut origs: Vec<&str> = adapter
        .layers
        .keys()
        .map(|p| table.by_canonical(p).unwrap().orig.as_str())
        .collect();
    origs.sort();
    origs.dedup();
    let (mut fused_count, mut swapped) = (0, 0);
    for orig in origs {
        let parts = table.parts_of(orig);
        if parts.len() == 1 {
            let row = parts[0];
            let l = &adapter.layers[&row.canonical];
            if row.rows == Rows::SwapHalves {
                // BFL final_layer.adaLN_modulation.1 = diffusers norm_out.linear, halves swapped
                let bfl = swap_halves(orig, l).unwrap();
                let (d, b) = (dense(l), dense(&bfl));
                let half = d.len() / 2;
                assert_close(orig, &b[..half], &d[half..]);
                assert_close(orig, &b[half..], &d[..half]);
                assert_close(orig, &dense(&swap_halves(orig, &bfl).unwrap()), &d);
                swapped += 1;
            }
            continue;
        }
        let fp: Vec<FusePart> = parts
            .iter()
            .map(|r| FusePart {
                name: &r.canonical,
                rows: r.out,
                layer: adapter.layers.get(&r.canonical),
            })
            .collect();
        let f = fuse(orig, &fp, false).unwrap();
        assert_eq!(f.out_features(), table.orig_out(orig), "{orig}");
        let stacked: Vec<f64> = parts
            .iter()
            .flat_map(|r| dense(&adapter.layers[&r.canonical]))
            .collect();
        assert_close(orig, &dense(&f), &stacked);
        let ranges: Vec<(String, std::ops::Range<usize>)> = parts
            .iter()
            .map(|r| match &r.rows {
                Rows::Range(x) => (r.canonical.clone(), x.clone()),
                other => panic!("{orig}: {other:?}"),
            })
            .collect();
        for (name, back) in split(orig, &f, &ranges).unwrap() {
            assert_close(&name, &dense(&back), &dense(&adapter.layers[&name]));
        }
        fused_count += 1;
    }
    // 1 double block (img qkv, txt qkv) + 1 single block (linear1); norm_out
    assert_eq!((fused_count, swapped), (3, 1));
}
