//! Full disks: every command that writes, run into a tmpfs too small for its output (mounted by
//! the test; root only, skipped with a message elsewhere). Each must fail with "No space left on
//! device" naming its output, and leave nothing behind: no temp files, no empty or half-written
//! directory, an existing output untouched, a store that verifies clean.
//!
//! Each case first runs the command with room to spare (it must succeed) and measures what it
//! writes, then runs it again on a filesystem of a third of that size, so the disk fills up
//! part way through the output.

mod robust;

use robust::{fixture, loratool, temp_entries, text, tree, SmallFs};
use std::path::Path;

/// Total bytes of the files under `p`.
fn du(p: &Path) -> u64 {
    if p.is_file() {
        return std::fs::metadata(p).map_or(0, |m| m.len());
    }
    tree(p)
        .iter()
        .map(|rel| {
            std::fs::metadata(p.join(rel)).map_or(0, |m| if m.is_file() { m.len() } else { 0 })
        })
        .sum()
}

/// `args` with `{out}` replaced by `out`.
fn with_out(args: &[&str], out: &Path) -> Vec<String> {
    args.iter()
        .map(|a| a.replace("{out}", &out.display().to_string()))
        .collect()
}

/// Run `args` writing `out_name` into a roomy directory (must succeed), then into a tmpfs a
/// third that size (must fail cleanly). Returns the mounted filesystem for further checks.
fn fills_up(test: &str, args: &[&str], out_name: &str, prepare: impl Fn(&Path)) -> Option<SmallFs> {
    fills_up_env(test, &[], args, out_name, prepare)
}

/// [`fills_up`] with environment variables set for loratool.
fn fills_up_env(
    test: &str,
    env: &[(&str, &Path)],
    args: &[&str],
    out_name: &str,
    prepare: impl Fn(&Path),
) -> Option<SmallFs> {
    let loratool = || {
        let mut c = loratool();
        c.envs(env.iter().copied());
        c
    };
    let roomy = tempfile::tempdir().unwrap();
    let out = roomy.path().join(out_name);
    prepare(roomy.path());
    let o = loratool().args(with_out(args, &out)).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{test} with room: {}", text(&o));
    let need = du(&out);
    assert!(
        need > 3 * 4096,
        "{test}: output of {need} bytes is too small to fill a disk"
    );
    let size = (need / 3).div_ceil(4096) * 4096;

    let fs = SmallFs::mount(test, size)?;
    prepare(fs.path());
    let before: Vec<(String, Vec<u8>)> = tree(fs.path())
        .into_iter()
        .filter(|p| fs.path().join(p).is_file())
        .map(|p| {
            let bytes = std::fs::read(fs.path().join(&p)).unwrap();
            (p, bytes)
        })
        .collect();
    let out = fs.path().join(out_name);
    let o = loratool().args(with_out(args, &out)).output().unwrap();
    let msg = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{test} on a {size}-byte disk: {msg}"
    );
    assert!(
        msg.contains("No space left on device"),
        "{test}: the error does not say the disk is full: {msg}"
    );
    assert!(
        msg.contains(&out.display().to_string()),
        "{test}: the error does not name the output {}: {msg}",
        out.display()
    );
    let after: Vec<(String, Vec<u8>)> = tree(fs.path())
        .into_iter()
        .filter(|p| fs.path().join(p).is_file())
        .map(|p| {
            let bytes = std::fs::read(fs.path().join(&p)).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(
        before == after,
        "{test}: files changed or left behind: {:?}",
        tree(fs.path())
    );
    let dirs_before: Vec<String> = {
        let scratch = tempfile::tempdir().unwrap();
        prepare(scratch.path());
        tree(scratch.path())
    };
    assert_eq!(tree(fs.path()), dirs_before, "{test}: entries left behind");
    Some(fs)
}

fn nothing(_: &Path) {}

#[test]
fn convert_sdxl_kohya_to_a_peft_directory() {
    let sdxl = fixture("gen_sdxl_kohya.safetensors");
    let args = [
        "convert",
        sdxl.to_str().unwrap(),
        "--to",
        "peft",
        "-o",
        "{out}",
    ];
    fills_up(
        "convert_sdxl_kohya_to_a_peft_directory",
        &args,
        "out",
        nothing,
    );
}

#[test]
fn convert_into_an_existing_adapter_directory_keeps_the_old_adapter() {
    // the old adapter's files must survive a failed overwrite byte for byte
    let old = |dir: &Path| {
        let d = dir.join("out");
        std::fs::create_dir_all(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixture("peft/dora").join(f), d.join(f)).unwrap();
        }
    };
    let sdxl = fixture("gen_sdxl_kohya.safetensors");
    let args = [
        "convert",
        sdxl.to_str().unwrap(),
        "--to",
        "peft",
        "-o",
        "{out}",
    ];
    fills_up(
        "convert_into_an_existing_adapter_directory",
        &args,
        "out",
        old,
    );
}

#[test]
fn convert_kohya_to_a_diffusers_directory() {
    let sd15 = fixture("gen_sd15_kohya.safetensors");
    let args = [
        "convert",
        sd15.to_str().unwrap(),
        "--to",
        "diffusers",
        "-o",
        "{out}",
    ];
    fills_up(
        "convert_kohya_to_a_diffusers_directory",
        &args,
        "out",
        nothing,
    );
}

#[test]
fn resize_into_a_file() {
    let k = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let args = ["resize", k.to_str().unwrap(), "--rank", "4", "-o", "{out}"];
    fills_up("resize_into_a_file", &args, "small.safetensors", nothing);
}

#[test]
fn merge_into_a_peft_directory() {
    let (a, b) = (fixture("peft/plain"), fixture("peft/plain2"));
    let args = [
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--weights",
        "0.5,0.5",
        "-o",
        "{out}",
    ];
    fills_up("merge_into_a_peft_directory", &args, "merged", nothing);
}

#[test]
fn bake_into_a_model_directory() {
    let (base, lora) = (fixture("tiny_llama"), fixture("peft/plain"));
    let args = [
        "bake",
        base.to_str().unwrap(),
        lora.to_str().unwrap(),
        "-o",
        "{out}",
    ];
    fills_up("bake_into_a_model_directory", &args, "baked", nothing);
}

#[test]
fn bake_into_a_file() {
    let base = fixture("tiny_llama/model.safetensors");
    let lora = fixture("peft/plain");
    let args = [
        "bake",
        base.to_str().unwrap(),
        lora.to_str().unwrap(),
        "-o",
        "{out}",
    ];
    fills_up("bake_into_a_file", &args, "baked.safetensors", nothing);
}

#[test]
fn quantize_a_gguf_model() {
    let m = fixture("tiny_llama-f32.gguf");
    let args = [
        "quantize",
        m.to_str().unwrap(),
        "--type",
        "q8_0",
        "-o",
        "{out}",
    ];
    fills_up("quantize_a_gguf_model", &args, "q8.gguf", nothing);
}

#[test]
fn extract_into_a_peft_directory() {
    let (base, tuned) = (fixture("tiny_llama"), fixture("peft_merges/merged"));
    let args = [
        "extract",
        "--base",
        base.to_str().unwrap(),
        "--tuned",
        tuned.to_str().unwrap(),
        "--rank",
        "8",
        "--embeddings",
        "full",
        "-o",
        "{out}",
    ];
    fills_up("extract_into_a_peft_directory", &args, "extracted", nothing);
}

/// `add` into a store on a full disk: the error names the store, no blob or temp file is left,
/// the index is unchanged and `verify` passes.
#[test]
fn registry_add_into_a_full_store() {
    let test = "registry_add_into_a_full_store";
    let lora = fixture("gen_sdxl_kohya.safetensors");
    let run = |home: &Path, args: &[&str]| {
        loratool()
            .env("LORATOOL_HOME", home)
            .args(args)
            .output()
            .unwrap()
    };
    let roomy = tempfile::tempdir().unwrap();
    let store = roomy.path().join("store");
    let o = run(
        &store,
        &["add", lora.to_str().unwrap(), "--name", "style:v1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let need = du(&store);
    let Some(fs) = SmallFs::mount(test, (need / 3).div_ceil(4096) * 4096) else {
        return;
    };
    let store = fs.path().join("store");
    let o = run(&store, &["list"]); // an empty store fits
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let index_before = std::fs::read(store.join("index.json")).unwrap();
    let o = run(
        &store,
        &["add", lora.to_str().unwrap(), "--name", "style:v1"],
    );
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains(&store.display().to_string()),
        "does not name the store: {msg}"
    );
    assert_eq!(
        temp_entries(&store),
        Vec::<String>::new(),
        "temp files left"
    );
    assert_eq!(
        tree(&store.join("blobs/sha256")),
        Vec::<String>::new(),
        "partial blob left"
    );
    assert_eq!(
        std::fs::read(store.join("index.json")).unwrap(),
        index_before
    );
    let o = run(&store, &["verify"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify after a failed add: {}",
        text(&o)
    );
    assert!(Path::new(&store).join("oci-layout").is_file());
}

/// `export` of a stored adapter into a directory on a full disk leaves no directory behind.
#[test]
fn registry_export_into_a_directory() {
    let store = tempfile::tempdir().unwrap();
    let lora = fixture("peft/plain");
    let o = loratool()
        .env("LORATOOL_HOME", store.path())
        .args(["add", lora.to_str().unwrap(), "--name", "plain:v1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let args = ["export", "plain:v1", "-o", "{out}"];
    let env = [("LORATOOL_HOME", store.path())];
    fills_up_env(
        "registry_export_into_a_directory",
        &env,
        &args,
        "exported",
        nothing,
    );
}
