//! LyCORIS → LoRA against files made by the real tools (fixtures/lycoris/, made by
//! fixtures/gen/make_lycoris_fixtures.py with lycoris-lora 4.1.3 and PEFT 0.21.2): every
//! converted layer's ΔW equals the ΔW the tool's own module forward() produced, and a
//! truncation equals the dense Eckart–Young optimum.

use loratool::adapter::codec::{read_adapter, ReadContext};
use loratool::adapter::lycoris::{self, Algorithm, ModuleTensors, Options, Target};
use loratool::adapter::{Format, LayerKind, LoraLayer};
use loratool::formats::sd;
use loratool::io::SafetensorsFile;
use loratool::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lycoris")
        .join(name)
}

/// A dense row-major f64 matrix.
struct Dense {
    rows: usize,
    cols: usize,
    v: Vec<f64>,
}

impl Dense {
    fn of(t: &Tensor) -> Dense {
        let v = t.to_f64();
        let rows = t.shape()[0];
        Dense {
            rows,
            cols: v.len() / rows,
            v,
        }
    }
    fn mul_t(&self, o: &Dense) -> Dense {
        // self · oᵀ
        assert_eq!(self.cols, o.cols);
        let mut v = vec![0.0; self.rows * o.rows];
        for i in 0..self.rows {
            for j in 0..o.rows {
                v[i * o.rows + j] = (0..self.cols)
                    .map(|l| self.v[i * self.cols + l] * o.v[j * o.cols + l])
                    .sum();
            }
        }
        Dense {
            rows: self.rows,
            cols: o.rows,
            v,
        }
    }
    fn t(&self) -> Dense {
        let mut v = vec![0.0; self.v.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                v[j * self.rows + i] = self.v[i * self.cols + j];
            }
        }
        Dense {
            rows: self.cols,
            cols: self.rows,
            v,
        }
    }
    fn rel_err(&self, want: &Dense) -> f64 {
        assert_eq!((self.rows, self.cols), (want.rows, want.cols), "shapes");
        let num: f64 = self
            .v
            .iter()
            .zip(&want.v)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let den: f64 = want.v.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    }
}

/// `scale · up · down`, `out × in·kh·kw`.
fn delta(l: &LoraLayer) -> Dense {
    let up = Dense::of(&l.up);
    let down = Dense::of(&l.down);
    let mut d = up.mul_t(&down.t());
    d.v.iter_mut().for_each(|x| *x *= l.scale());
    d
}

/// PEFT's DoRA on the canonical layer: `W' − W₀` with `W' = m ⊙ (W₀+ΔW)/‖W₀+ΔW‖_row`.
fn dora_delta(l: &LoraLayer, base: &Tensor) -> Dense {
    let w0 = Dense::of(base);
    let mut d = delta(l);
    let m = l.magnitude.as_ref().expect("magnitude").to_f64();
    let cols = d.cols;
    for (i, (dr, wr)) in d.v.chunks_mut(cols).zip(w0.v.chunks(cols)).enumerate() {
        let norm = dr
            .iter()
            .zip(wr)
            .map(|(a, b)| (a + b) * (a + b))
            .sum::<f64>()
            .sqrt();
        for (x, w) in dr.iter_mut().zip(wr) {
            *x = m[i] * (*x + w) / norm - w;
        }
    }
    d
}

/// Group a kohya-layout LyCORIS file's keys by module, as the kohya reader does.
fn modules(file: &SafetensorsFile) -> BTreeMap<String, ModuleTensors> {
    let mut out: BTreeMap<String, ModuleTensors> = BTreeMap::new();
    for key in file.tensors().keys() {
        let (module, local) = lycoris::split_key(key).expect("a LyCORIS key");
        out.entry(module.to_string())
            .or_default()
            .insert(local, file.tensor(key).unwrap());
    }
    out
}

fn target_of(t: &Tensor) -> Target {
    let s = t.shape();
    match s.len() {
        2 => Target {
            kind: LayerKind::Linear,
            out: s[0],
            in_: s[1],
            kh: 1,
            kw: 1,
        },
        _ => Target {
            kind: LayerKind::Conv,
            out: s[0],
            in_: s[1],
            kh: s[2],
            kw: s[3],
        },
    }
}

fn check_tiny(case: &str, want_alg: Algorithm) {
    let file = SafetensorsFile::open(&fixture(&format!("tiny_{case}.safetensors"))).unwrap();
    let reference =
        SafetensorsFile::open(&fixture(&format!("tiny_{case}.ref.safetensors"))).unwrap();
    let mods = modules(&file);
    assert_eq!(mods.len(), 3, "{case}");
    for (name, tensors) in &mods {
        let want = reference.tensor(&format!("{name}.delta")).unwrap();
        let opts = Options {
            target: Some(target_of(&want)),
            ..Options::lycoris()
        };
        let c = lycoris::convert(name, tensors, &opts).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(c.origin.algorithm, want_alg, "{case} {name}");
        assert_eq!(c.layer.kind, opts.target.unwrap().kind, "{case} {name}");
        let got = match reference.tensor(&format!("{name}.base")) {
            Ok(base) => {
                assert!(c.origin.dora, "{case} {name}");
                dora_delta(&c.layer, &base)
            }
            Err(_) => delta(&c.layer),
        };
        let err = got.rel_err(&Dense::of(&want));
        assert!(
            err < 1e-5,
            "{case} {name}: relative error {err} vs LyCORIS forward()"
        );
    }
}

#[test]
fn lycoris_kohya_layout_modules_equal_lycoris_forward() {
    check_tiny("loha", Algorithm::Loha);
    check_tiny("loha_tucker", Algorithm::Loha);
    check_tiny("lokr_full", Algorithm::Lokr);
    check_tiny("lokr_factored", Algorithm::Lokr);
    check_tiny("lokr_decompose_both", Algorithm::Lokr);
    check_tiny("lokr_tucker", Algorithm::Lokr);
    check_tiny("locon_tucker", Algorithm::Locon);
    check_tiny("dora_locon", Algorithm::Locon);
    check_tiny("dora_loha", Algorithm::Loha);
    check_tiny("dora_lokr", Algorithm::Lokr);
}

#[test]
fn fixtures_cover_the_variants_they_claim() {
    let has = |case: &str, local: &str| {
        let f = SafetensorsFile::open(&fixture(&format!("tiny_{case}.safetensors"))).unwrap();
        f.tensors().keys().any(|k| k.ends_with(local))
    };
    assert!(has("loha_tucker", ".hada_t1"));
    assert!(has("lokr_factored", ".lokr_w2_b") && has("lokr_factored", ".lokr_w1"));
    assert!(has("lokr_decompose_both", ".lokr_w1_a"));
    assert!(has("lokr_tucker", ".lokr_t2"));
    assert!(has("lokr_full", ".lokr_w2") && !has("lokr_full", ".lokr_w2_b"));
    assert!(has("locon_tucker", ".lora_mid.weight"));
}

#[test]
fn input_axis_dora_is_refused_by_name() {
    let file = SafetensorsFile::open(&fixture("tiny_dora_input_axis.safetensors")).unwrap();
    let reference =
        SafetensorsFile::open(&fixture("tiny_dora_input_axis.ref.safetensors")).unwrap();
    for (name, tensors) in modules(&file) {
        let want = reference.tensor(&format!("{name}.delta")).unwrap();
        let opts = Options {
            target: Some(target_of(&want)),
            ..Options::lycoris()
        };
        let e = lycoris::convert(&name, &tensors, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&name) && e.contains("input column"), "{e}");
    }
}

/// Singular values of a dense matrix, descending.
fn singular_values(d: &Dense) -> Vec<f64> {
    faer::Mat::<f64>::from_fn(d.rows, d.cols, |i, j| d.v[i * d.cols + j])
        .singular_values()
        .unwrap()
}

#[test]
fn truncating_a_full_lokr_is_the_eckart_young_optimum() {
    let file = SafetensorsFile::open(&fixture("tiny_lokr_full.safetensors")).unwrap();
    let reference = SafetensorsFile::open(&fixture("tiny_lokr_full.ref.safetensors")).unwrap();
    for (name, tensors) in modules(&file) {
        let want = Dense::of(&reference.tensor(&format!("{name}.delta")).unwrap());
        let sv = singular_values(&want);
        let total: f64 = sv.iter().map(|x| x * x).sum();
        for k in [1, 3, 8] {
            let opts = Options {
                max_rank: Some(k),
                target: Some(target_of(
                    &reference.tensor(&format!("{name}.delta")).unwrap(),
                )),
                ..Options::lycoris()
            };
            let c = lycoris::convert(&name, &tensors, &opts).unwrap();
            let got = delta(&c.layer);
            let err2: f64 = got
                .v
                .iter()
                .zip(&want.v)
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            let optimum: f64 = sv.iter().skip(k).map(|x| x * x).sum();
            assert_eq!(c.layer.rank(), k);
            assert!(
                (err2 - optimum).abs() <= 1e-5 * total,
                "{name} k={k}: ‖ΔW−ΔW_k‖² {err2} vs optimum {optimum}"
            );
            let t = c.origin.truncation.expect("truncation reported");
            assert!((t.dropped_energy - optimum / total).abs() < 1e-5, "{t:?}");
            assert_eq!(c.origin.exact_rank, t.from);
        }
    }
}

#[test]
fn kohya_reader_converts_sd15_lycoris_files_through_the_table() {
    let table = sd::table("sd15").unwrap();
    for (case, alg) in [
        ("loha", Algorithm::Loha),
        ("lokr", Algorithm::Lokr),
        ("locon_tucker", Algorithm::Locon),
    ] {
        let path = fixture(&format!("sd15_{case}.safetensors"));
        let reference =
            SafetensorsFile::open(&fixture(&format!("sd15_{case}.ref.safetensors"))).unwrap();
        let adapter = read_adapter(&path, None, &ReadContext::default()).unwrap();
        assert_eq!(adapter.meta.source_format, Some(Format::Kohya));
        assert_eq!(adapter.meta.family.as_deref(), Some("sd15"));
        assert_eq!(adapter.layers.len(), 3, "{case}");
        for (path, layer) in &adapter.layers {
            let row = table.by_canonical(path).unwrap();
            // a LoCon module without lora_mid is plain LoRA and read as such
            if case != "locon_tucker" || row.kh == 3 {
                assert_eq!(adapter.meta.lycoris[path].algorithm, alg, "{case} {path}");
            }
            let x = Dense::of(&reference.tensor(&format!("{}.x", row.kohya)).unwrap());
            let y = Dense::of(&reference.tensor(&format!("{}.y", row.kohya)).unwrap());
            // y = x · ΔWᵀ on the tool's random probes
            let got = x.mul_t(&delta(layer));
            let err = got.rel_err(&y);
            assert!(err < 1e-5, "{case} {path}: relative error {err}");
            assert_eq!((layer.kind, layer.kernel()), (row.kind, (row.kh, row.kw)));
        }
    }
}

#[test]
fn peft_loha_and_lokr_directories_equal_peft_forward() {
    for (case, alg, modules) in [
        ("peft_loha", Algorithm::Loha, 3),
        ("peft_lokr", Algorithm::Lokr, 3),
        ("peft_lokr_full", Algorithm::Lokr, 3),
        ("peft_lokr_decompose_both", Algorithm::Lokr, 2),
    ] {
        let dir = fixture(case);
        let adapter = read_adapter(&dir, None, &ReadContext::default()).unwrap();
        let reference = SafetensorsFile::open(&dir.join("reference.safetensors")).unwrap();
        assert_eq!(adapter.layers.len(), modules, "{case}");
        for (path, layer) in &adapter.layers {
            assert_eq!(adapter.meta.lycoris[path].algorithm, alg);
            let want = Dense::of(&reference.tensor(&format!("{path}.delta")).unwrap());
            let err = delta(layer).rel_err(&want);
            assert!(
                err < 1e-5,
                "{case} {path}: relative error {err} vs PEFT forward()"
            );
        }
        if case == "peft_lokr_full" {
            // both factors full: PEFT's alpha/r (4/16) applies, and the origin says so
            let note = adapter.meta.lycoris["q"].note.clone().unwrap();
            assert!(note.contains("PEFT"), "{note}");
        }
    }
}

#[test]
fn converted_lycoris_written_as_kohya_is_plain_lora_with_the_same_delta() {
    let adapter = read_adapter(
        &fixture("sd15_lokr.safetensors"),
        None,
        &ReadContext::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain.safetensors");
    loratool::adapter::kohya::write(&adapter, &out, &|_| {}).unwrap();
    let file = SafetensorsFile::open(&out).unwrap();
    // the source said lycoris.kohya with algo=lokr; the written file is plain LoRA
    assert_eq!(file.metadata()["ss_network_module"], "networks.lora");
    assert!(!file.metadata()["ss_network_args"].contains("lokr"));
    assert!(file
        .tensors()
        .keys()
        .all(|k| k.ends_with("lora_down.weight")
            || k.ends_with("lora_up.weight")
            || k.ends_with(".alpha")));
    let back = read_adapter(&out, None, &ReadContext::default()).unwrap();
    for (path, layer) in &adapter.layers {
        let err = delta(&back.layers[path]).rel_err(&delta(layer));
        assert!(err < 1e-6, "{path}: {err}");
    }
}
