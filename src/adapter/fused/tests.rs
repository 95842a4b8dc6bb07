//! Fuse / split against dense references: the parts' `scale·B·A` must equal the fused
//! module's rows exactly (up to f32 rounding of the scaled factors).

use super::*;

fn rand(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn layer(out: usize, r: usize, inp: usize, alpha: f64, seed: u64) -> LoraLayer {
    LoraLayer::new(
        "t",
        Tensor::from_f32(vec![r, inp], &rand(r * inp, seed), DType::F32).unwrap(),
        Tensor::from_f32(vec![out, r], &rand(out * r, seed + 1), DType::F32).unwrap(),
        alpha,
        LayerKind::Linear,
    )
    .unwrap()
}

/// Dense `scale·B·A`, row-major `out × in`.
fn dense(l: &LoraLayer) -> Vec<f64> {
    let (out, r) = (l.out_features(), l.rank());
    let a = l.down.to_f64();
    let b = l.up.to_f64();
    let n = a.len() / r;
    let mut d = vec![0.0; out * n];
    for i in 0..out {
        for k in 0..r {
            for j in 0..n {
                d[i * n + j] += l.scale() * b[i * r + k] * a[k * n + j];
            }
        }
    }
    d
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|x| x.abs()).fold(1e-30, f64::max);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6 * scale, "{x} vs {y}");
    }
}

fn ranges(sizes: &[usize]) -> Vec<(String, Range<usize>)> {
    let mut at = 0;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            at += s;
            (format!("p{i}"), at - s..at)
        })
        .collect()
}

#[test]
fn split_shares_a_and_cuts_b_by_rows() {
    let fused = layer(11, 3, 4, 6.0, 1);
    let parts = split("qkv", &fused, &ranges(&[3, 3, 5])).unwrap();
    let full = dense(&fused);
    let mut stacked = Vec::new();
    for (_, p) in &parts {
        assert_eq!(p.down.bytes(), fused.down.bytes());
        assert_eq!(p.scale(), fused.scale());
        stacked.extend(dense(p));
    }
    close(&stacked, &full);
}

#[test]
fn block_diagonal_up_splits_into_its_blocks() {
    // rank 6 = 3 parts × 2, up block-diagonal (as sd-scripts saves split_qkv / fused q,k,v)
    let mut fused = layer(9, 6, 5, 3.0, 2);
    let mut up = fused.up.to_f32();
    for i in 0..9 {
        for c in 0..6 {
            if c / 2 != i / 3 {
                up[i * 6 + c] = 0.0;
            }
        }
    }
    fused.up = Tensor::from_f32(vec![9, 6], &up, DType::F32).unwrap();
    let parts = split("qkv", &fused, &ranges(&[3, 3, 3])).unwrap();
    let mut stacked = Vec::new();
    for (_, p) in &parts {
        assert_eq!(p.rank(), 2);
        assert_eq!(p.scale(), fused.scale());
        stacked.extend(dense(p));
    }
    close(&stacked, &dense(&fused));
    // sd-scripts trained each block at alpha / 2, not alpha / 6
    let trained = sd_scripts_split_qkv("qkv", &fused, &ranges(&[3, 3, 3])).unwrap();
    assert_eq!(trained.scale(), 3.0 / 2.0);
    let e = sd_scripts_split_qkv("qkv", &layer(9, 6, 5, 3.0, 3), &ranges(&[3, 3, 3])).unwrap_err();
    assert!(e.to_string().contains("block-diagonal"), "{e}");
}

#[test]
fn split_refuses_parts_that_do_not_tile_the_rows() {
    let fused = layer(11, 3, 4, 6.0, 4);
    let e = split("single_blocks.0.linear1", &fused, &ranges(&[3, 3, 3]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("single_blocks.0.linear1") && e.contains("11 output rows"),
        "{e}"
    );
}

#[test]
fn swap_halves_exchanges_output_rows() {
    let l = layer(6, 2, 3, 2.0, 5);
    let s = swap_halves("norm_out.linear", &l).unwrap();
    let (d, e) = (dense(&l), dense(&s));
    close(&e[..9], &d[9..]);
    close(&e[9..], &d[..9]);
}

#[test]
fn fusing_different_parts_stacks_scaled_a_and_block_diagonal_b() {
    let (q, k, v) = (
        layer(3, 2, 4, 1.0, 6),
        layer(3, 4, 4, 8.0, 7),
        layer(5, 1, 4, 3.0, 8),
    );
    let parts = [
        FusePart {
            name: "to_q",
            rows: 3,
            layer: Some(&q),
        },
        FusePart {
            name: "to_k",
            rows: 3,
            layer: Some(&k),
        },
        FusePart {
            name: "to_v",
            rows: 5,
            layer: Some(&v),
        },
    ];
    let f = fuse("qkv", &parts, false).unwrap();
    assert_eq!((f.rank(), f.alpha), (7, 7.0));
    close(&dense(&f), &[dense(&q), dense(&k), dense(&v)].concat());
}

#[test]
fn fusing_parts_with_one_a_shares_it() {
    let fused = layer(11, 3, 4, 6.0, 9);
    let split_parts = split("qkv", &fused, &ranges(&[3, 3, 5])).unwrap();
    let parts: Vec<FusePart> = split_parts
        .iter()
        .map(|(n, l)| FusePart {
            name: n,
            rows: l.out_features(),
            layer: Some(l),
        })
        .collect();
    let back = fuse("qkv", &parts, false).unwrap();
    assert_eq!((back.rank(), back.alpha), (3, 6.0));
    close(&dense(&back), &dense(&fused));
}

#[test]
fn fusing_with_a_missing_part_is_an_error_naming_it_unless_allowed() {
    let (q, v) = (layer(3, 2, 4, 1.0, 10), layer(3, 2, 4, 2.0, 11));
    let parts = [
        FusePart {
            name: "to_q",
            rows: 3,
            layer: Some(&q),
        },
        FusePart {
            name: "to_k",
            rows: 3,
            layer: None,
        },
        FusePart {
            name: "to_v",
            rows: 3,
            layer: Some(&v),
        },
    ];
    let e = fuse("double_blocks.0.img_attn.qkv", &parts, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("double_blocks.0.img_attn.qkv") && e.contains("to_k"),
        "{e}"
    );
    let f = fuse("qkv", &parts, true).unwrap();
    let zeros = vec![0.0; 12];
    close(&dense(&f), &[dense(&q), zeros, dense(&v)].concat());
}

#[test]
fn fusing_parts_with_different_inputs_or_sizes_is_an_error() {
    let (q, k) = (layer(3, 2, 4, 1.0, 12), layer(3, 2, 5, 1.0, 13));
    let parts = [
        FusePart {
            name: "to_q",
            rows: 3,
            layer: Some(&q),
        },
        FusePart {
            name: "to_k",
            rows: 3,
            layer: Some(&k),
        },
    ];
    assert!(fuse("m", &parts, false)
        .unwrap_err()
        .to_string()
        .contains("share their input"));
    let parts = [FusePart {
        name: "to_q",
        rows: 4,
        layer: Some(&q),
    }];
    assert!(fuse("m", &parts, false)
        .unwrap_err()
        .to_string()
        .contains("table says 4"));
}

#[test]
fn dora_magnitudes_follow_their_rows() {
    let mut fused = layer(6, 2, 3, 2.0, 14);
    let m: Vec<f32> = (0..6).map(|i| i as f32 + 1.0).collect();
    fused.magnitude = Some(Tensor::from_f32(vec![6], &m, DType::F32).unwrap());
    let parts = split("qkv", &fused, &ranges(&[2, 4])).unwrap();
    assert_eq!(
        parts[1].1.magnitude.as_ref().unwrap().to_f32(),
        vec![3.0, 4.0, 5.0, 6.0]
    );
    let fp: Vec<FusePart> = parts
        .iter()
        .map(|(n, l)| FusePart {
            name: n,
            rows: l.out_features(),
            layer: Some(l),
        })
        .collect();
    assert_eq!(
        fuse("qkv", &fp, false).unwrap().magnitude.unwrap().to_f32(),
        m
    );
    let swapped = swap_halves("m", &fused).unwrap();
    assert_eq!(
        swapped.magnitude.unwrap().to_f32(),
        vec![4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
    );
}
