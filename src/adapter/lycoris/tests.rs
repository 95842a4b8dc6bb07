//! Every conversion against the dense ΔW of the LyCORIS formula (test_util), truncations
//! against the dense Eckart–Young optimum, and the refusals.

use super::test_util::{layer_delta, rel_err, tensor, tucker, Dense};
use super::*;

fn module(entries: Vec<(&'static str, Tensor)>) -> ModuleTensors {
    entries.into_iter().collect()
}

fn alpha(a: f64) -> Tensor {
    Tensor::scalar(a, DType::F32).unwrap()
}

fn d(t: &Tensor) -> Dense {
    Dense::of(t, t.shape()[0])
}

fn check(name: &str, got: &Converted, want: &Dense) {
    let err = rel_err(&layer_delta(&got.layer), want);
    assert!(err < 2e-6, "{name}: relative error {err}");
}

#[test]
fn keys_split_into_module_and_local_name() {
    assert_eq!(
        split_key("lora_unet_a_b.hada_w1_a"),
        Some(("lora_unet_a_b", "hada_w1_a"))
    );
    assert_eq!(
        split_key("lora_te1_x.lora_mid.weight"),
        Some(("lora_te1_x", "lora_mid"))
    );
    assert_eq!(
        split_key("base_model.model.blk.0.q.lokr_w1"),
        Some(("base_model.model.blk.0.q", "lokr_w1"))
    );
    assert_eq!(split_key("m.a1.weight"), Some(("m", "a1")));
    assert_eq!(split_key("m.lokr_w2_b"), Some(("m", "lokr_w2_b")));
    assert_eq!(split_key("hada_w1_a"), None);
    assert_eq!(split_key("m.q_proj.weight"), None);
    assert!(needs_conversion(["lora_down", "lora_up", "dora_scale"]));
    assert!(!needs_conversion(["lora_down", "lora_up", "alpha"]));
}

#[test]
fn plain_locon_keeps_its_tensors_and_scale() {
    let (down, up) = (tensor(&[3, 9], 1), tensor(&[7, 3], 2));
    let t = module(vec![
        ("lora_down", down.clone()),
        ("lora_up", up.clone()),
        ("alpha", alpha(1.5)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    assert_eq!(c.layer.down.bytes(), down.bytes());
    assert_eq!(c.layer.up.bytes(), up.bytes());
    assert_eq!(c.layer.scale(), 0.5);
    assert_eq!(
        (c.origin.algorithm, c.origin.exact_rank, c.origin.rank),
        (Algorithm::Locon, 3, 3)
    );
}

#[test]
fn locon_tucker_is_exact_at_rank_r() {
    let (out, inp, r) = (6, 5, 3);
    let down = tensor(&[r, inp, 1, 1], 3);
    let mid = tensor(&[r, r, 3, 3], 4);
    let up = tensor(&[out, r, 1, 1], 5);
    let t = module(vec![
        ("lora_down", down.clone()),
        ("lora_mid", mid.clone()),
        ("lora_up", up.clone()),
        ("alpha", alpha(2.0)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    let want = tucker(&mid, &d(&up).t(), &Dense::of(&down, r)).scaled(2.0 / 3.0);
    check("locon tucker", &c, &want);
    assert_eq!(c.layer.kind, LayerKind::Conv);
    assert_eq!(c.layer.down.shape(), &[3, 5, 3, 3]);
    assert_eq!(c.layer.up.shape(), &[6, 3, 1, 1]);
    assert!(c.origin.tucker);
}

fn loha_dense(w1a: &Tensor, w1b: &Tensor, w2a: &Tensor, w2b: &Tensor, s: f64) -> Dense {
    d(w1a).mul(&d(w1b)).hadamard(&d(w2a).mul(&d(w2b))).scaled(s)
}

#[test]
fn loha_is_the_face_splitting_product_of_its_factors() {
    // r² = 4 below min(out, in): kept at rank 4 as built
    let (out, inp, r) = (12, 10, 2);
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[out, r], 6),
        tensor(&[r, inp], 7),
        tensor(&[out, r], 8),
        tensor(&[r, inp], 9),
    );
    let t = module(vec![
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
        ("alpha", alpha(1.0)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    check("loha", &c, &loha_dense(&w1a, &w1b, &w2a, &w2b, 0.5));
    assert_eq!((c.layer.rank(), c.origin.exact_rank), (4, 4));
    assert!(c.origin.truncation.is_none());

    // r² = 16 above min(out, in) = 7: compressed exactly to rank 7
    let (out, inp, r) = (7, 9, 4);
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[out, r], 10),
        tensor(&[r, inp], 11),
        tensor(&[out, r], 12),
        tensor(&[r, inp], 13),
    );
    let t = module(vec![
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
        ("alpha", alpha(8.0)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    check(
        "loha compressed",
        &c,
        &loha_dense(&w1a, &w1b, &w2a, &w2b, 2.0),
    );
    assert_eq!((c.layer.rank(), c.origin.exact_rank), (7, 7));
    assert!(c.origin.truncation.is_none());
}

#[test]
fn loha_tucker_conv_is_exact() {
    let (out, inp, r) = (6, 4, 2);
    let t1 = tensor(&[r, r, 3, 3], 14);
    let t2 = tensor(&[r, r, 3, 3], 15);
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[r, out], 16),
        tensor(&[r, inp], 17),
        tensor(&[r, out], 18),
        tensor(&[r, inp], 19),
    );
    let t = module(vec![
        ("hada_t1", t1.clone()),
        ("hada_t2", t2.clone()),
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
        ("alpha", alpha(1.0)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    let want = tucker(&t1, &d(&w1a), &d(&w1b))
        .hadamard(&tucker(&t2, &d(&w2a), &d(&w2b)))
        .scaled(0.5);
    check("loha tucker", &c, &want);
    assert_eq!(c.layer.down.shape(), &[4, 4, 3, 3]);
    assert!(c.origin.tucker);
}

#[test]
fn loha_conv_without_tucker_needs_the_target_for_its_kernel() {
    let (out, inp, r) = (5, 3, 2);
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[out, r], 20),
        tensor(&[r, inp * 9], 21),
        tensor(&[out, r], 22),
        tensor(&[r, inp * 9], 23),
    );
    let t = module(vec![
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
    ]);
    let mut opts = Options::lycoris();
    opts.target = Some(Target {
        kind: LayerKind::Conv,
        out,
        in_: inp,
        kh: 3,
        kw: 3,
    });
    let c = convert("m", &t, &opts).unwrap();
    assert_eq!(c.layer.down.shape(), &[4, 3, 3, 3]);
    check("loha conv", &c, &loha_dense(&w1a, &w1b, &w2a, &w2b, 1.0));
    // a target of another shape is an error naming the module
    opts.target = Some(Target {
        kind: LayerKind::Conv,
        out,
        in_: inp,
        kh: 1,
        kw: 1,
    });
    let e = convert("lora_unet_x", &t, &opts).unwrap_err().to_string();
    assert!(
        e.contains("lora_unet_x") && e.contains("different model"),
        "{e}"
    );
}

fn lokr_check(
    name: &str,
    t: &ModuleTensors,
    opts: &Options,
    want: &Dense,
    exact_rank: usize,
) -> Converted {
    let c = convert(name, t, opts).unwrap();
    check(name, &c, want);
    assert_eq!(c.origin.exact_rank, exact_rank, "{name}");
    c
}

#[test]
fn lokr_variants_are_exact() {
    // w1 full 2×3, w2 = 4×2·2×5 (r 2): out 8, in 15, exact rank 2·2 = 4
    let (w1, w2a, w2b) = (
        tensor(&[2, 3], 30),
        tensor(&[4, 2], 31),
        tensor(&[2, 5], 32),
    );
    let t = module(vec![
        ("lokr_w1", w1.clone()),
        ("lokr_w2_a", w2a.clone()),
        ("lokr_w2_b", w2b.clone()),
        ("alpha", alpha(1.0)),
    ]);
    let want = d(&w1).kron(&d(&w2a).mul(&d(&w2b))).scaled(0.5);
    lokr_check("lokr factored w2", &t, &Options::lycoris(), &want, 4);

    // decompose_both: w1 = 3×1·1×2 (rank 1), w2 = 4×2·2×5: exact rank 2
    let (w1a, w1b) = (tensor(&[3, 1], 33), tensor(&[1, 2], 34));
    let t = module(vec![
        ("lokr_w1_a", w1a.clone()),
        ("lokr_w1_b", w1b.clone()),
        ("lokr_w2_a", w2a.clone()),
        ("lokr_w2_b", w2b.clone()),
        ("alpha", alpha(3.0)),
    ]);
    let want = d(&w1a)
        .mul(&d(&w1b))
        .kron(&d(&w2a).mul(&d(&w2b)))
        .scaled(1.5);
    lokr_check("lokr decompose_both", &t, &Options::lycoris(), &want, 2);

    // conv, w2 full [b, d, 3, 3]
    let (w1, w2) = (tensor(&[2, 2], 35), tensor(&[3, 2, 3, 3], 36));
    let t = module(vec![
        ("lokr_w1", w1.clone()),
        ("lokr_w2", w2.clone()),
        ("alpha", alpha(7.0)),
    ]);
    let want = d(&w1).kron(&d(&w2)); // both full: scale 1 under LyCORIS
    let c = lokr_check("lokr conv full", &t, &Options::lycoris(), &want, 2 * 3);
    assert_eq!(c.layer.down.shape(), &[6, 4, 3, 3]);
    assert!(c
        .origin
        .note
        .as_deref()
        .is_some_and(|n| n.contains("scale 1")));

    // conv Tucker: t2 [r, r, 3, 3], w2_a [r, b], w2_b [r, d]
    let (w1, t2, w2a, w2b) = (
        tensor(&[2, 3], 37),
        tensor(&[2, 2, 3, 3], 38),
        tensor(&[2, 4], 39),
        tensor(&[2, 5], 40),
    );
    let t = module(vec![
        ("lokr_w1", w1.clone()),
        ("lokr_t2", t2.clone()),
        ("lokr_w2_a", w2a.clone()),
        ("lokr_w2_b", w2b.clone()),
        ("alpha", alpha(1.0)),
    ]);
    let want = d(&w1).kron(&tucker(&t2, &d(&w2a), &d(&w2b))).scaled(0.5);
    let c = lokr_check("lokr tucker", &t, &Options::lycoris(), &want, 2 * 2);
    assert_eq!(c.layer.down.shape(), &[4, 15, 3, 3]);
    assert!(c.origin.tucker);
}

#[test]
fn lokr_both_full_follows_the_files_origin() {
    let (w1, w2) = (tensor(&[2, 3], 41), tensor(&[4, 5], 42));
    let t = module(vec![
        ("lokr_w1", w1.clone()),
        ("lokr_w2", w2.clone()),
        ("alpha", alpha(4.0)),
    ]);
    let k = d(&w1).kron(&d(&w2));
    let c = lokr_check("lycoris", &t, &Options::lycoris(), &k, 8);
    assert!(c.origin.note.unwrap().contains("LyCORIS"));
    let mut opts = Options::lycoris();
    opts.convention = Convention::Peft {
        alpha: 4.0,
        rank: 8,
    };
    let c = lokr_check("peft", &t, &opts, &k.scaled(0.5), 8);
    assert!(c.origin.note.unwrap().contains("PEFT"));
}

/// `‖ΔW − ΔW_k‖² = Σ_{i≥k} σᵢ(ΔW)²` from the dense SVD: the truncation is optimal.
fn assert_eckart_young(name: &str, c: &Converted, want: &Dense, k: usize) {
    let sv = want.sv();
    let optimum: f64 = sv.iter().skip(k).map(|x| x * x).sum();
    let got = layer_delta(&c.layer).minus(want).frob2();
    assert_eq!(c.layer.rank(), k, "{name}");
    assert!(
        (got - optimum).abs() <= 1e-5 * want.frob2(),
        "{name}: error² {got}, optimum {optimum}"
    );
    let tr = c.origin.truncation.expect("truncation reported");
    assert_eq!(tr.to, k);
    assert!(
        (tr.dropped_energy - optimum / want.frob2()).abs() < 1e-6,
        "{name}: {tr:?}"
    );
}

#[test]
fn truncations_are_the_eckart_young_optimum() {
    let mut opts = Options::lycoris();
    // LoKr, both factors full: exact rank 3·4 = 12 = full; truncate to 5
    let (w1, w2) = (tensor(&[3, 3], 50), tensor(&[4, 5], 51));
    let t = module(vec![("lokr_w1", w1.clone()), ("lokr_w2", w2.clone())]);
    let want = d(&w1).kron(&d(&w2));
    opts.max_rank = Some(5);
    let c = convert("lokr", &t, &opts).unwrap();
    assert_eq!(c.origin.exact_rank, 12);
    assert_eckart_young("lokr", &c, &want, 5);

    // LoHa r 3: rank 9 on 10×11; truncate to 4
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[10, 3], 52),
        tensor(&[3, 11], 53),
        tensor(&[10, 3], 54),
        tensor(&[3, 11], 55),
    );
    let t = module(vec![
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
        ("alpha", alpha(3.0)),
    ]);
    opts.max_rank = Some(4);
    let c = convert("loha", &t, &opts).unwrap();
    assert_eq!(c.origin.exact_rank, 9);
    assert_eckart_young("loha", &c, &loha_dense(&w1a, &w1b, &w2a, &w2b, 1.0), 4);

    // LoHa r 4: rank 16 ≥ min(7, 9), the dense-product branch; truncate to 3
    let (w1a, w1b, w2a, w2b) = (
        tensor(&[7, 4], 56),
        tensor(&[4, 9], 57),
        tensor(&[7, 4], 58),
        tensor(&[4, 9], 59),
    );
    let t = module(vec![
        ("hada_w1_a", w1a.clone()),
        ("hada_w1_b", w1b.clone()),
        ("hada_w2_a", w2a.clone()),
        ("hada_w2_b", w2b.clone()),
    ]);
    opts.max_rank = Some(3);
    let c = convert("loha wide", &t, &opts).unwrap();
    assert_eq!(c.origin.exact_rank, 7);
    assert_eckart_young("loha wide", &c, &loha_dense(&w1a, &w1b, &w2a, &w2b, 1.0), 3);
}

#[test]
fn dora_scale_on_the_output_axis_becomes_the_magnitude() {
    let (down, up) = (tensor(&[2, 6], 60), tensor(&[5, 2], 61));
    let m = tensor(&[5, 1], 62);
    let t = module(vec![
        ("lora_down", down.clone()),
        ("lora_up", up.clone()),
        ("dora_scale", m.clone()),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    let mag = c.layer.magnitude.as_ref().unwrap();
    assert_eq!(mag.shape(), &[5]);
    assert_eq!(mag.to_f32(), m.to_f32());
    assert!(c.origin.dora);
    // conv: [out, 1, 1, 1] → PEFT's [1, out, 1, 1]
    let t = module(vec![
        ("lora_down", tensor(&[2, 3, 3, 3], 63)),
        ("lora_up", tensor(&[4, 2, 1, 1], 64)),
        ("dora_scale", tensor(&[4, 1, 1, 1], 65)),
    ]);
    let c = convert("m", &t, &Options::lycoris()).unwrap();
    assert_eq!(c.layer.magnitude.unwrap().shape(), &[1, 4, 1, 1]);
    // input axis: refused by name
    let t = module(vec![
        ("lora_down", down),
        ("lora_up", up),
        ("dora_scale", tensor(&[1, 6], 66)),
    ]);
    let e = convert("lora_unet_q", &t, &Options::lycoris())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lora_unet_q") && e.contains("input column"),
        "{e}"
    );
}

#[test]
fn bad_modules_are_errors_naming_the_module() {
    let opts = Options::lycoris();
    let err = |t: ModuleTensors| convert("lora_unet_blk", &t, &opts).unwrap_err().to_string();
    let e = err(module(vec![
        ("hada_w1_a", tensor(&[4, 2], 1)),
        ("lokr_w1", tensor(&[2, 2], 2)),
    ]));
    assert!(
        e.contains("lora_unet_blk")
            && e.contains("mixes")
            && e.contains("LoHa")
            && e.contains("LoKr"),
        "{e}"
    );
    let e = err(module(vec![
        ("hada_w1_a", tensor(&[4, 2], 1)),
        ("hada_w1_b", tensor(&[3, 5], 2)),
        ("hada_w2_a", tensor(&[4, 2], 3)),
        ("hada_w2_b", tensor(&[2, 5], 4)),
    ]));
    assert!(
        e.contains("lora_unet_blk") && e.contains("do not multiply"),
        "{e}"
    );
    let e = err(module(vec![
        ("hada_w1_a", tensor(&[4, 2], 1)),
        ("hada_w1_b", tensor(&[2, 5], 2)),
    ]));
    assert!(e.contains("hada_w2_a"), "{e}");
    let e = err(module(vec![
        ("lokr_w1", tensor(&[2, 2], 1)),
        ("lokr_w2_a", tensor(&[3, 2], 2)),
        ("lokr_w2_b", tensor(&[3, 4], 3)),
    ]));
    assert!(e.contains("do not multiply"), "{e}");
    let e = err(module(vec![("alpha", alpha(1.0))]));
    assert!(e.contains("nothing to convert"), "{e}");
    for (key, what) in [
        ("diff", "full"),
        ("w_norm", "norm"),
        ("on_input", "(IA)³"),
        ("oft_blocks", "OFT"),
        ("a1", "GLoRA"),
    ] {
        let e = err(module(vec![(key, tensor(&[2, 2], 9))]));
        assert!(
            e.contains("lora_unet_blk") && e.contains(what),
            "{key}: {e}"
        );
    }
}

#[test]
fn lokr_both_full_is_capped_optimally_when_no_rank_is_asked() {
    // 1024×1024 from two full 32×32 factors: exact rank 1024 = full; the unasked cap keeps
    // 1024·1024 / (2·2048) = 256, the 256 largest σᵢτⱼ (Eckart–Young), and reports it
    let (w1, w2) = (tensor(&[32, 32], 60), tensor(&[32, 32], 61));
    let t = module(vec![("lokr_w1", w1.clone()), ("lokr_w2", w2.clone())]);
    assert_eq!(unasked_rank_cap(1024, 1024), Some(256));
    let c = convert("lokr big", &t, &Options::lycoris()).unwrap();
    assert_eq!(c.origin.exact_rank, 1024);
    assert_eq!(c.layer.rank(), 256);
    // the optimum from the small factors' singular values, independently of the conversion
    let (s1, s2) = (d(&w1).sv(), d(&w2).sv());
    let mut all: Vec<f64> = s1
        .iter()
        .flat_map(|a| s2.iter().map(move |b| a * b))
        .collect();
    all.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = all.iter().map(|x| x * x).sum();
    let optimum: f64 = all.iter().skip(256).map(|x| x * x).sum();
    let want = d(&w1).kron(&d(&w2));
    let got = layer_delta(&c.layer).minus(&want).frob2();
    assert!((got - optimum).abs() <= 1e-5 * total, "{got} vs {optimum}");
    let tr = c.origin.truncation.expect("truncation reported");
    assert_eq!((tr.from, tr.to), (1024, 256));
    assert!((tr.dropped_energy - optimum / total).abs() < 1e-6);
    assert!(c.origin.note.unwrap().contains("capped at 256"));
    // an asked rank overrides the cap
    let mut opts = Options::lycoris();
    opts.max_rank = Some(600);
    assert_eq!(convert("lokr big", &t, &opts).unwrap().layer.rank(), 600);
    // small modules keep their exact rank
    assert_eq!(unasked_rank_cap(8, 15), None);
}

#[test]
fn lokr_claiming_a_module_beyond_any_model_is_refused_before_its_factors_exist() {
    // two full 200×200 factors (320 KB of f32) describe a 40000×40000 ΔW of rank 40000; even
    // the unasked cap (10000) would need 8·10⁸ values: refused by name, nothing allocated
    let t = module(vec![
        ("lokr_w1", tensor(&[200, 200], 70)),
        ("lokr_w2", tensor(&[200, 200], 71)),
    ]);
    let e = convert("lokr huge", &t, &Options::lycoris()).expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("lokr huge") && msg.contains("lower rank"),
        "{msg}"
    );
    // asking for a rank that fits converts it
    let mut opts = Options::lycoris();
    opts.max_rank = Some(64);
    assert_eq!(convert("lokr huge", &t, &opts).unwrap().layer.rank(), 64);
}
