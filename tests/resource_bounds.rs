//! Crafted files whose headers claim huge tensor counts, dimensions, string lengths, array
//! counts and alignments, read by `info`, `convert` and `quantize` under an address-space limit
//! (`ulimit -v`, far below what any claimed size would need). Each must be refused with an error
//! naming the file: a size from a header is checked against the file before anything is
//! allocated for it, so no run aborts on a failed allocation.

mod robust;

use robust::{fixture, text};
use std::path::Path;
use std::process::Command;

/// The address-space limit, in KiB: loratool reads small files in well under 64 MiB.
const LIMIT_KIB: u64 = 256 * 1024;

/// Run loratool with `args` under the limit.
fn limited(args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {LIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_loratool"))
        .args(args)
        .output()
        .expect("run sh")
}

fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    b
}

/// A GGUF v3 file: header counts, then `body` (metadata and tensor infos), then `pad` zeros.
fn gguf(n_tensors: u64, n_kv: u64, body: &[u8], pad: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b.extend_from_slice(body);
    b.extend(std::iter::repeat_n(0u8, pad));
    b
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// Metadata `key` of type `ty` with the raw value bytes `value`.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = string(key);
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(value);
    b
}

/// A tensor info: name, dims, ggml type, offset.
fn tensor_info(name: &[u8], dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = (name.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(name);
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let t = |shape: &str, offsets: &str| {
        format!(
            r#"{{"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#
        )
    };
    let mut huge_len = (u64::MAX - 7).to_le_bytes().to_vec();
    huge_len.extend_from_slice(b"{}");
    let mut at_limit = (100u64 << 20).to_le_bytes().to_vec();
    at_limit.extend_from_slice(b"{}      ");
    let many_dims = format!("[{}]", vec!["1"; 200_000].join(","));
    let llama = kv("general.architecture", 8, &string("llama"));
    let adapter = [
        llama.clone(),
        kv("general.type", 8, &string("adapter")),
        kv("adapter.type", 8, &string("lora")),
    ]
    .concat();
    vec![
        ("st_header_length_2^64", huge_len),
        ("st_header_length_100MiB", at_limit),
        (
            "st_shape_overflows",
            safetensors(&t("[4294967296,4294967296,16]", "[0,16]"), 16),
        ),
        (
            "st_shape_2^40",
            safetensors(&t("[1099511627776]", "[0,4398046511104]"), 16),
        ),
        (
            "st_offsets_2^64",
            safetensors(&t("[4]", "[0,18446744073709551615]"), 16),
        ),
        ("st_200k_dims", safetensors(&t(&many_dims, "[0,4]"), 4)),
        ("gguf_counts_2^62", gguf(1 << 62, 1 << 62, &[], 64)),
        (
            "gguf_key_length_2^61",
            gguf(0, 1, &(1u64 << 61).to_le_bytes(), 64),
        ),
        (
            "gguf_string_length_2^60",
            gguf(
                0,
                1,
                &[
                    string("general.name"),
                    8u32.to_le_bytes().to_vec(),
                    (1u64 << 60).to_le_bytes().to_vec(),
                ]
                .concat(),
                64,
            ),
        ),
        (
            "gguf_array_count_2^50",
            gguf(
                0,
                1,
                &[
                    string("tokenizer.ggml.tokens"),
                    9u32.to_le_bytes().to_vec(),
                    8u32.to_le_bytes().to_vec(),
                    (1u64 << 50).to_le_bytes().to_vec(),
                ]
                .concat(),
                64,
            ),
        ),
        (
            "gguf_tensor_dims_2^32x2^32",
            gguf(
                1,
                3,
                &[
                    adapter.clone(),
                    tensor_info(b"blk.0.attn_q.weight.lora_a", &[1 << 32, 1 << 32], 0, 0),
                ]
                .concat(),
                64,
            ),
        ),
        (
            "gguf_tensor_dims_2^40",
            gguf(
                1,
                1,
                &[
                    llama.clone(),
                    tensor_info(b"blk.0.attn_q.weight", &[1 << 40], 0, 0),
                ]
                .concat(),
                64,
            ),
        ),
        (
            "gguf_n_dims_2^32-1",
            gguf(
                1,
                1,
                &[llama.clone(), string("t"), u32::MAX.to_le_bytes().to_vec()].concat(),
                64,
            ),
        ),
        (
            "gguf_tensor_name_2^40",
            gguf(
                1,
                1,
                &[llama.clone(), (1u64 << 40).to_le_bytes().to_vec()].concat(),
                64,
            ),
        ),
        // no tensors: a valid file (info reads it), whose 2 GiB alignment a writer must not
        // allocate or write out
        (
            "gguf_alignment_2^31_no_tensors",
            gguf(
                0,
                2,
                &[
                    llama.clone(),
                    kv("general.alignment", 4, &(1u32 << 31).to_le_bytes()),
                ]
                .concat(),
                64,
            ),
        ),
        (
            "gguf_alignment_2^31",
            gguf(
                1,
                2,
                &[
                    llama.clone(),
                    kv("general.alignment", 4, &(1u32 << 31).to_le_bytes()),
                    tensor_info(b"token_embd.weight", &[32, 2], 0, 0),
                ]
                .concat(),
                4096,
            ),
        ),
    ]
}

fn refused(case: &str, file: &Path, args: &[&str], out: &Path) {
    let o = limited(args);
    let msg = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{case}: `{}` under ulimit -v {LIMIT_KIB} did not fail cleanly: {msg}",
        args.join(" ")
    );
    assert!(
        msg.contains(&file.display().to_string()),
        "{case}: the error names no file: {msg}"
    );
    assert!(!msg.contains("memory allocation"), "{case}: {msg}");
    assert!(!out.exists(), "{case}: an output was written");
}

#[test]
fn the_limit_leaves_room_for_real_files() {
    let dir = tempfile::tempdir().unwrap();
    for (args, what) in [
        (
            vec![
                "info".to_string(),
                fixture("gguf/plain-f16.gguf").to_str().unwrap().to_string(),
            ],
            "info",
        ),
        (
            vec![
                "convert".into(),
                fixture("gen_sd15_kohya.safetensors")
                    .to_str()
                    .unwrap()
                    .into(),
                "--to".into(),
                "peft".into(),
                "-o".into(),
                dir.path().join("peft").to_str().unwrap().into(),
            ],
            "convert",
        ),
        (
            vec![
                "quantize".into(),
                fixture("tiny_llama-f32.gguf").to_str().unwrap().into(),
                "--type".into(),
                "q8_0".into(),
                "-o".into(),
                dir.path().join("q8.gguf").to_str().unwrap().into(),
            ],
            "quantize",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = limited(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{what} under the limit: {}",
            text(&o)
        );
    }
}

#[test]
fn headers_claiming_huge_sizes_are_refused_under_an_address_space_limit() {
    let dir = tempfile::tempdir().unwrap();
    for (case, bytes) in cases() {
        let ext = if case.starts_with("gguf") {
            "gguf"
        } else {
            "safetensors"
        };
        let file = dir.path().join(format!("{case}.{ext}"));
        std::fs::write(&file, &bytes).unwrap();
        let f = file.to_str().unwrap();
        let out = dir.path().join(format!("{case}-out"));
        let o = out.to_str().unwrap();
        if case.ends_with("no_tensors") {
            let o = limited(&["info", f]);
            assert_eq!(o.status.code(), Some(0), "{case}: {}", text(&o));
        } else {
            refused(case, &file, &["info", f], &out);
        }
        refused(case, &file, &["convert", f, "--to", "peft", "-o", o], &out);
        if ext == "gguf" {
            refused(
                case,
                &file,
                &["quantize", f, "--type", "q8_0", "-o", o],
                &out,
            );
        }
    }
}
