//! Round-trip comparisons of canonical adapters: the same modules with the same kind and
//! shapes, and the same factors bit for bit ([`Tolerance::Exact`]) or the same
//! `ΔW = (alpha/r)·up·down` up to a relative Frobenius error ([`Tolerance::Delta`], for writers
//! that legitimately rescale factors, e.g. GGUF's one alpha per file). ΔW is compared through
//! r×r Gram matrices of the factors, so a wide module never needs its dense matrix.

use loratool::adapter::{Adapter, LoraLayer};
use loratool::tensor::Tensor;

#[derive(Clone, Copy, Debug)]
pub enum Tolerance {
    Exact,
    Delta(f64),
}

fn same_bytes(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtype");
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    assert!(a.bytes() == b.bytes(), "{what}: bytes differ");
}

fn same_opt(what: &str, a: &Option<Tensor>, b: &Option<Tensor>) {
    match (a, b) {
        (None, None) => {}
        (Some(a), Some(b)) => same_bytes(what, a, b),
        _ => panic!("{what}: present on one side only"),
    }
}

/// ⟨ΔW_x, ΔW_y⟩_F = s_x·s_y·Σ_{p,q} (B_xᵀB_y)_{pq} (A_x A_yᵀ)_{pq}.
fn inner(x: &LoraLayer, y: &LoraLayer) -> f64 {
    let (bx, ax, rx) = (x.up.to_f64(), x.down.to_f64(), x.rank());
    let (by, ay, ry) = (y.up.to_f64(), y.down.to_f64(), y.rank());
    let out = bx.len() / rx;
    let cols = ax.len() / rx;
    let mut acc = 0.0;
    for p in 0..rx {
        for q in 0..ry {
            let mut bb = 0.0;
            for i in 0..out {
                bb += bx[i * rx + p] * by[i * ry + q];
            }
            let mut aa = 0.0;
            for j in 0..cols {
                aa += ax[p * cols + j] * ay[q * cols + j];
            }
            acc += bb * aa;
        }
    }
    acc * x.scale() * y.scale()
}

/// ‖ΔW_a − ΔW_b‖_F / max(‖ΔW_b‖_F, tiny).
pub fn delta_rel_diff(a: &LoraLayer, b: &LoraLayer) -> f64 {
    let (aa, bb, ab) = (inner(a, a), inner(b, b), inner(a, b));
    (aa + bb - 2.0 * ab).max(0.0).sqrt() / bb.sqrt().max(1e-30)
}

/// `ΔW·v` for a fixed pseudo-random `v`: `s·B(A·v)`, O(r·(out + in)).
fn probe(l: &LoraLayer) -> Vec<f64> {
    let (b, a, r) = (l.up.to_f64(), l.down.to_f64(), l.rank());
    let cols = a.len() / r.max(1);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let v: Vec<f64> = (0..cols)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let av: Vec<f64> = a
        .chunks_exact(cols.max(1))
        .map(|row| row.iter().zip(&v).map(|(x, y)| x * y).sum())
        .collect();
    b.chunks_exact(r.max(1))
        .map(|row| row.iter().zip(&av).map(|(x, y)| x * y).sum::<f64>() * l.scale())
        .collect()
}

/// `‖ΔW_a·v − ΔW_b·v‖ / ‖ΔW_b·v‖` for one pseudo-random `v` (the same for both): a cheap
/// stand-in for [`delta_rel_diff`] where the Gram form costs O(r_a·r_b·(out + in)) per module
/// (fused Flux modules), which would dominate an instrumented run. For the two ΔW to differ and
/// the probe not to see it, `v` must lie in the null space of their difference: probability 0.
pub fn delta_probe_diff(a: &LoraLayer, b: &LoraLayer) -> f64 {
    let (pa, pb) = (probe(a), probe(b));
    if pa.len() != pb.len() {
        return f64::INFINITY;
    }
    let diff: f64 = pa.iter().zip(&pb).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = pb.iter().map(|y| y * y).sum();
    diff.sqrt() / norm.sqrt().max(1e-30)
}

#[track_caller]
pub fn assert_same_adapter(a: &Adapter, b: &Adapter, tol: Tolerance) {
    let ka: Vec<&String> = a.layers.keys().collect();
    let kb: Vec<&String> = b.layers.keys().collect();
    assert_eq!(ka, kb, "module sets differ");
    let fa: Vec<&String> = a.full.keys().collect();
    let fb: Vec<&String> = b.full.keys().collect();
    assert_eq!(fa, fb, "fully trained tensors differ");
    for (name, t) in &a.full {
        same_bytes(name, t, &b.full[name]);
    }
    for (path, la) in &a.layers {
        let lb = &b.layers[path];
        assert_eq!(la.kind, lb.kind, "{path}: kind");
        assert_eq!(la.down.shape(), lb.down.shape(), "{path}: down shape");
        assert_eq!(la.up.shape(), lb.up.shape(), "{path}: up shape");
        match tol {
            Tolerance::Exact => {
                assert_eq!(la.alpha.to_bits(), lb.alpha.to_bits(), "{path}: alpha");
                same_bytes(&format!("{path} down"), &la.down, &lb.down);
                same_bytes(&format!("{path} up"), &la.up, &lb.up);
                same_opt(&format!("{path} magnitude"), &la.magnitude, &lb.magnitude);
                same_opt(&format!("{path} bias"), &la.bias, &lb.bias);
            }
            Tolerance::Delta(rel) => {
                let all_finite = [&la.down, &la.up, &lb.down, &lb.up]
                    .iter()
                    .all(|t| t.to_f64().iter().all(|x| x.is_finite()));
                if all_finite {
                    let d = delta_rel_diff(la, lb);
                    assert!(
                        d <= rel || d.is_nan(),
                        "{path}: ΔW differs by {d:e} (relative)"
                    );
                }
            }
        }
    }
}
