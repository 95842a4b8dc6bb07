//! Block codecs against their oracles, from committed fixtures only (`fixtures/quant/`).
//!
//! - bytes: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 from `gguf.quants.quantize` (gguf-py);
//!   Q2_K..Q6_K golden bytes from ggml's reference C code (`quantize_row_*_ref`).
//! - floats: every type from `gguf.quants.dequantize` of those bytes.
//!
//! No Python, compiler or network is needed: `make_quant_fixtures.py` made the files once and
//! `index.json` pins their sha256.

use std::path::{Path, PathBuf};

use loratool::quant::{self, QuantType};
use loratool::Error;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/quant")
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

struct Fixtures {
    index: Value,
    row_len: usize,
    cases: Vec<String>,
    input: Vec<f32>,
}

fn fixtures() -> Fixtures {
    let index: Value = serde_json::from_slice(&read("index.json")).expect("index.json parses");
    let row_len = index["row_len"].as_u64().unwrap() as usize;
    let cases = index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let input = f32s(&read(index["input"].as_str().unwrap()));
    Fixtures {
        index,
        row_len,
        cases,
        input,
    }
}

/// The index key of a type: ggml's name in lower case (`q4_k`).
fn key(ty: QuantType) -> String {
    ty.name().to_ascii_lowercase()
}

fn type_entry(f: &Fixtures, ty: QuantType) -> &Value {
    let entry = &f.index["types"][key(ty)];
    assert!(entry.is_object(), "fixtures have no entry for {ty}");
    entry
}

const ORACLE_TYPES: [QuantType; 12] = [
    QuantType::F16,
    QuantType::BF16,
    QuantType::Q8_0,
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q2_K,
    QuantType::Q3_K,
    QuantType::Q4_K,
    QuantType::Q5_K,
    QuantType::Q6_K,
];

fn assert_quantize_matches_oracle(ty: QuantType) {
    let f = fixtures();
    let entry = type_entry(&f, ty);
    assert_eq!(entry["ggml_type"].as_u64().unwrap() as u32, ty.ggml_type());
    let row_bytes = ty.row_bytes(f.row_len).unwrap();
    assert_eq!(entry["bytes_per_row"].as_u64().unwrap() as usize, row_bytes);
    let expected = read(entry["quant"].as_str().unwrap());
    assert_eq!(expected.len(), f.cases.len() * row_bytes);

    // Row by row first, so a failure names the case and the block.
    let mut mismatches = Vec::new();
    let mut ours = Vec::new();
    for (r, (row, want)) in f
        .input
        .chunks(f.row_len)
        .zip(expected.chunks(row_bytes))
        .enumerate()
    {
        ours.clear();
        quant::quantize_row(ty, row, &mut ours).unwrap();
        if let Some(i) = ours.iter().zip(want).position(|(a, b)| a != b) {
            mismatches.push(format!(
                "row {r} ({}): first differing byte {i} (block {}): ours {:#04x}, oracle {:#04x}",
                f.cases[r],
                i / ty.type_size(),
                ours[i],
                want[i]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{ty} quantize differs from {}:\n{}",
        entry["quant_oracle"],
        mismatches.join("\n")
    );
    // The parallel whole-tensor path gives the same bytes.
    assert!(quant::quantize(ty, &f.input, f.row_len).unwrap() == expected);
}

fn assert_dequantize_matches_oracle(ty: QuantType) {
    let f = fixtures();
    let entry = type_entry(&f, ty);
    let bytes = read(entry["quant"].as_str().unwrap());
    let expected = f32s(&read(entry["dequant"].as_str().unwrap()));
    let ours = quant::dequantize(ty, &bytes, f.row_len).unwrap();
    assert_eq!(ours.len(), expected.len());
    let mismatches: Vec<String> = ours
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
        .take(10)
        .map(|(i, (a, b))| {
            format!(
                "row {} ({}), value {}: ours {a:e} ({:#010x}), oracle {b:e} ({:#010x})",
                i / f.row_len,
                f.cases[i / f.row_len],
                i % f.row_len,
                a.to_bits(),
                b.to_bits()
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{ty} dequantize differs from gguf.quants.dequantize:\n{}",
        mismatches.join("\n")
    );
}

/// Independent of any oracle: reconstruction error on the Gaussian rows stays within the
/// type's precision, and all-zero / constant rows come back exactly.
fn assert_round_trip_error_is_sane(ty: QuantType) {
    let f = fixtures();
    let bound = type_entry(&f, ty)["max_rel_rms_error_normal_rows"]
        .as_f64()
        .unwrap();
    let bytes = quant::quantize(ty, &f.input, f.row_len).unwrap();
    let back = quant::dequantize(ty, &bytes, f.row_len).unwrap();
    for (r, name) in f.cases.iter().enumerate() {
        let x = &f.input[r * f.row_len..(r + 1) * f.row_len];
        let y = &back[r * f.row_len..(r + 1) * f.row_len];
        if name.starts_with("normal_sigma") {
            let err: f64 = x
                .iter()
                .zip(y)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum();
            let norm: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
            let rel = (err / norm).sqrt();
            assert!(
                rel < bound,
                "{ty} {name}: relative RMS error {rel} >= {bound}"
            );
        }
        if name == "all_zero" {
            assert!(y.iter().all(|v| *v == 0.0), "{ty} {name}");
        }
    }
}

macro_rules! oracle_tests {
    ($($module:ident => $ty:expr,)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn quantize_is_bit_exact_with_oracle() {
                assert_quantize_matches_oracle($ty);
            }

            #[test]
            fn dequantize_is_bit_exact_with_gguf_py() {
                assert_dequantize_matches_oracle($ty);
            }

            #[test]
            fn round_trip_error_is_within_type_precision() {
                assert_round_trip_error_is_sane($ty);
            }
        }
    )*};
}

oracle_tests! {
    f16 => QuantType::F16,
    bf16 => QuantType::BF16,
    q8_0 => QuantType::Q8_0,
    q4_0 => QuantType::Q4_0,
    q4_1 => QuantType::Q4_1,
    q5_0 => QuantType::Q5_0,
    q5_1 => QuantType::Q5_1,
    q2_k => QuantType::Q2_K,
    q3_k => QuantType::Q3_K,
    q4_k => QuantType::Q4_K,
    q5_k => QuantType::Q5_K,
    q6_k => QuantType::Q6_K,
}

#[test]
fn every_oracle_type_has_fixtures_and_vice_versa() {
    let f = fixtures();
    let listed: Vec<&String> = f.index["types"].as_object().unwrap().keys().collect();
    assert_eq!(listed.len(), ORACLE_TYPES.len());
    for ty in ORACLE_TYPES {
        type_entry(&f, ty);
    }
}

#[test]
fn fixtures_cover_the_tie_and_edge_cases() {
    let f = fixtures();
    for case in [
        "all_zero",
        "half_integers_amax127",
        "legacy_half_step_ties",
        "q_1_half_step_ties",
        "repeated_pm_max",
        "alternating_max_sign",
        "tiny_1e-30",
        "one_outlier_per_block",
        "one_outlier_per_row",
        "grid_4bit_half_steps",
        "fp16_bf16_rounding_edges",
    ] {
        assert!(f.cases.iter().any(|c| c == case), "missing case {case}");
    }
    assert_eq!(f.input.len(), f.cases.len() * f.row_len);
}

#[test]
fn fixtures_are_committed_files_pinned_by_sha256() {
    let f = fixtures();
    let files = f.index["files"].as_object().unwrap();
    for ty in ORACLE_TYPES {
        let entry = type_entry(&f, ty);
        for k in ["quant", "dequant"] {
            assert!(files.contains_key(entry[k].as_str().unwrap()), "{ty} {k}");
        }
    }
    for (name, sha) in files {
        let got = hex::encode(Sha256::digest(read(name)));
        assert_eq!(
            &got,
            sha.as_str().unwrap(),
            "{name} changed since index.json was written"
        );
    }
}

#[test]
fn tests_need_no_python_or_other_process() {
    // This file reads fixtures only; it must not shell out (e.g. to the Python that .ci/run
    // installs). The needles are split so this test does not find itself.
    let source = include_str!("quant.rs");
    for needle in [
        concat!("std::", "process"),
        concat!("Command", "::new"),
        concat!("python", "3"),
    ] {
        assert!(!source.contains(needle), "tests/quant.rs uses {needle}");
    }
}

fn invalid_message(result: loratool::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn row_length_not_a_multiple_of_the_block_is_invalid() {
    for ty in [QuantType::Q8_0, QuantType::Q4_K, QuantType::Q6_K] {
        let message = invalid_message(quant::quantize(ty, &[0.5; 48], 48));
        assert!(
            message.contains(&format!(
                "row length 48 is not a multiple of the {ty} block size {}",
                ty.block_size()
            )),
            "{message}"
        );
        let message = invalid_message(quant::quantize_row(ty, &[0.5; 48], &mut Vec::new()));
        assert!(message.contains("not a multiple"), "{message}");
    }
}

#[test]
fn byte_length_not_whole_blocks_is_invalid() {
    let message = invalid_message(quant::dequantize_row(
        QuantType::Q8_0,
        &[0u8; 35],
        &mut Vec::new(),
    ));
    assert!(
        message.contains("35 bytes is not a whole number of 34-byte blocks"),
        "{message}"
    );
    let message = invalid_message(quant::dequantize(QuantType::Q4_K, &[0u8; 145], 256));
    assert!(
        message.contains("145 bytes do not split into rows of 144 bytes"),
        "{message}"
    );
}

#[test]
fn data_not_a_whole_number_of_rows_is_invalid() {
    let message = invalid_message(quant::quantize(QuantType::Q4_0, &[0.0; 96], 64));
    assert!(
        message.contains("96 values do not split into rows of 64"),
        "{message}"
    );
    let message = invalid_message(quant::quantize(QuantType::Q4_0, &[], 0));
    assert!(message.contains("row length is 0"), "{message}");
}

#[test]
fn output_buffer_of_wrong_size_is_invalid() {
    let message = invalid_message(quant::quantize_row_into(
        QuantType::Q8_0,
        &[0.0; 32],
        &mut [0u8; 33],
    ));
    assert!(message.contains("holds 33 bytes, 34 needed"), "{message}");
    let message = invalid_message(quant::dequantize_row_into(
        QuantType::Q5_K,
        &[0u8; 176],
        &mut [0f32; 255],
    ));
    assert!(
        message.contains("holds 255 values, 256 decoded"),
        "{message}"
    );
    let message = invalid_message(quant::quantize_into(
        QuantType::Q4_1,
        &[0.0; 64],
        32,
        &mut [0u8; 20],
    ));
    assert!(message.contains("2 rows of 20 bytes needed"), "{message}");
}

#[test]
fn unknown_type_name_is_invalid_and_lists_known_names() {
    let message = invalid_message("q3_0".parse::<QuantType>());
    assert!(
        message.contains("unknown quantization type 'q3_0'") && message.contains("q4_K"),
        "{message}"
    );
}

#[test]
fn non_finite_input_does_not_panic() {
    let mut row = vec![1.0f32; 256];
    row[3] = f32::NAN;
    row[100] = f32::INFINITY;
    row[200] = -f32::INFINITY;
    for ty in QuantType::ALL {
        let bytes = quant::quantize(ty, &row, 256).unwrap();
        quant::dequantize(ty, &bytes, 256).unwrap();
    }
}
