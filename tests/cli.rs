//! The command line: exit codes, `info` text and JSON, `convert` end to end.

mod common;

use common::*;
use loratool::adapter::codec::read_adapter;
use loratool::adapter::ReadOptions;
use serde_json::Value;

#[test]
fn exit_codes_separate_usage_errors_from_runtime_errors() {
    assert_eq!(loratool(&[]).status.code(), Some(2));
    assert_eq!(loratool(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        loratool(&["convert", "x"]).status.code(),
        Some(2),
        "missing --to"
    );
    let o = loratool(&["convert", "x", "--to", "onnx", "-o", "y"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected peft, diffusers, kohya, gguf, comfy"));
    let o = loratool(&["info", "/nonexistent/adapter.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/adapter.safetensors"),
        "{}",
        stderr(&o)
    );
    assert_eq!(loratool(&["--help"]).status.code(), Some(0));
}

#[test]
fn info_json_describes_a_kohya_file() {
    let p = fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors");
    let o = loratool(&["info", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "adapter");
    assert_eq!(v["format"], "kohya");
    assert_eq!(v["family"], "sd15");
    assert_eq!(v["modules"], 350);
    assert_eq!(v["layer_kinds"]["conv"], 50 + 14 + 32); // 3x3 + conv_shortcut + 16×(proj_in, proj_out)
    let ranks = v["ranks"].as_array().unwrap();
    let r2 = ranks.iter().find(|g| g["rank"] == 2).unwrap();
    assert_eq!(r2["modules"], 50);
    assert_eq!(r2["alphas"][0]["scale"], 0.5);
    let r4 = ranks.iter().find(|g| g["rank"] == 4).unwrap();
    assert_eq!(r4["alphas"][0]["alpha"], 2.0);
    assert_eq!(v["dtypes"][0]["dtype"], "F16");
    assert_eq!(v["file_bytes"], std::fs::metadata(&p).unwrap().len());
    // parameter count equals the sum over the file's factor tensors
    let f = loratool::io::SafetensorsFile::open(&p).unwrap();
    let params: usize = f
        .tensors()
        .iter()
        .filter(|(k, _)| !k.ends_with(".alpha"))
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(v["params"], params as u64);
}

#[test]
fn info_on_a_base_model_counts_tensors_and_parameters() {
    let p = fixture("tiny_llama");
    let o = loratool(&["info", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "model");
    assert_eq!(v["tensors"], 21);
    // hidden 128, inter 352, 2 layers, 8 heads of 16, 2 kv heads, vocab 512, untied head
    let per_layer = 128 * 128 * 2 + 32 * 128 * 2 + 3 * 352 * 128 + 2 * 128;
    let expect = 2 * per_layer + 2 * 512 * 128 + 128;
    assert_eq!(v["params"], expect);
    let text = stdout(&loratool(&["info", p.to_str().unwrap()]));
    assert!(text.contains("base model") && text.contains("21"), "{text}");
}

#[test]
fn convert_kohya_to_peft_and_back_through_the_cli() {
    let dir = tempdir();
    let src = fixture("gen_sdxl_kohya.safetensors");
    let peft_dir = dir.path().join("peft");
    let o = loratool(&[
        "convert",
        src.to_str().unwrap(),
        "--to",
        "peft",
        "-o",
        peft_dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["from"], "kohya");
    assert_eq!(v["modules"], 13);
    let back = dir.path().join("back.safetensors");
    let o = loratool(&[
        "convert",
        peft_dir.to_str().unwrap(),
        "--to",
        "kohya",
        "-o",
        back.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let a = read_adapter(&src, None, &ctx(ReadOptions::default())).unwrap();
    let b = read_adapter(&back, None, &ctx(ReadOptions::default())).unwrap();
    assert_eq!(b.layers.len(), a.layers.len());
    for (p, l) in &a.layers {
        let lb = &b.layers[p];
        assert_eq!(lb.dtype(), loratool::tensor::DType::BF16);
        assert_eq!(lb.alpha, l.alpha, "{p}");
        // bf16 keeps 8 bits of mantissa: relative error of the product stays below 2^-7
        let e = rel_err(&dense_delta(l), &dense_delta(lb));
        assert!(e < 1.0 / 128.0, "{p}: {e}");
    }
}

#[test]
fn convert_refuses_a_directory_for_kohya_output_and_writes_nothing_on_error() {
    let dir = tempdir();
    let src = fixture("gen_sd15_kohya.safetensors");
    let o = loratool(&[
        "convert",
        src.to_str().unwrap(),
        "--to",
        "kohya",
        "-o",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("one .safetensors file"),
        "{}",
        stderr(&o)
    );
    let out = dir.path().join("k.safetensors");
    let o = loratool(&[
        "convert",
        fixture("peft/plain").to_str().unwrap(),
        "--to",
        "kohya",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn resize_usage_errors_and_json_output() {
    let src = fixture("gen_sd15_kohya.safetensors");
    let s = src.to_str().unwrap();
    let dir = tempdir();
    let out = dir.path().join("r.safetensors");
    let o = out.to_str().unwrap();
    // --method needs --param, and the reverse: usage errors
    assert_eq!(
        loratool(&["resize", s, "--rank", "2", "--method", "sv_fro", "-o", o])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        loratool(&["resize", s, "--rank", "2", "--param", "0.5", "-o", o])
            .status
            .code(),
        Some(2)
    );
    let r = loratool(&["resize", s, "--rank", "0", "-o", o]);
    assert_eq!(r.status.code(), Some(1));
    assert!(stderr(&r).contains("at least 1"), "{}", stderr(&r));
    assert!(!out.exists());
    let r = loratool(&[
        "resize", s, "--rank", "2", "--method", "sv_ratio", "--param", "4", "-o", o, "--json",
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", stderr(&r));
    let v: Value = serde_json::from_str(&stdout(&r)).unwrap();
    assert_eq!(v["summary"]["modules"], 11);
    assert!(v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["new_rank"].as_u64().unwrap() <= 2));
    let f = loratool::io::SafetensorsFile::open(&out).unwrap();
    assert_eq!(f.metadata()["ss_network_dim"], "Dynamic");
    assert!(f.metadata()["ss_training_comment"]
        .starts_with("Dynamic resize with sv_ratio: 4.0 from 8; "));
}

#[test]
fn info_reads_gguf_headers() {
    let p = fixture("gguf/plain-q8_0.gguf");
    let o = loratool(&["info", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "adapter");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["lora_alpha"], 8.0);
    assert_eq!(v["tensors"], 28);
    assert_eq!(v["types"]["q8_0"][0], 14);
    assert_eq!(v["types"]["f16"][0], 14);
    // the same parameters as the PEFT adapter it was converted from
    let peft = loratool::adapter::peft::read(&fixture("peft/plain"), Default::default()).unwrap();
    assert_eq!(v["params"], peft.param_count() as u64);
}

#[test]
fn info_names_a_lora_it_cannot_place_as_a_lora() {
    use loratool::tensor::DType;
    let dir = tempdir();
    let p = dir.path().join("odd.safetensors");
    write_st(
        &p,
        &[
            (
                "m.lora_down.weight".into(),
                pseudo(vec![4, 8], 1, DType::F16),
            ),
            ("m.lora_up.weight".into(), pseudo(vec![8, 4], 2, DType::F16)),
        ],
        &[],
    );
    let o = loratool(&["info", s(&p)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("looks like a LoRA") && e.contains("m.lora_down.weight"),
        "{e}"
    );
    assert!(!stdout(&o).contains("base model"), "{}", stdout(&o));
}

#[test]
fn a_missing_base_model_is_reported_with_the_flag_that_gives_it() {
    let dir = tempdir();
    let out = dir.path().join("x");
    let o = loratool(&[
        "convert",
        s(&fixture("gguf/plain-f32.gguf")),
        "--to",
        "peft",
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("RoPE-permuted") && e.contains("--base"), "{e}");
    assert!(!out.exists());
    // describing it needs no base: info reads the stored layout
    let v: Value = serde_json::from_str(&run_ok(&[
        "info",
        s(&fixture("gguf/plain-f32.gguf")),
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["modules"], 14);
    assert_eq!(v["ranks"][0]["rank"], 4);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_loratool"))
        .args([
            "info",
            fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors")
                .to_str()
                .unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the reader goes away before loratool prints (as `| head -0` would)
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        o.status.success() || o.status.signal() == Some(13),
        "{:?} {err}",
        o.status
    );
}
