//! SIGKILL at seeded random points of long writes: a `bake` into a directory, a `quantize`, a
//! registry `add` and a `gc`. Whatever the moment, the destination is absent or complete
//! (byte-identical to an uninterrupted run), the next run into the same place removes the
//! killed run's temp entries, and a killed run's leftovers are never taken for outputs.
//!
//! The delays are drawn from a fixed seed over the length of an uninterrupted run, so each CI
//! run kills at the same relative points.

mod robust;

use loratool::io::gguf::{write_gguf, GgufValue, PendingGgufTensor};
use loratool::io::{write_safetensors, PendingTensor};
use loratool::tensor::{DType, Tensor};
use robust::{fixture, loratool, text, tree};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// xorshift64*: the kill points, reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..n).map(|_| r.unit() as f32 - 0.5).collect()
}

/// File name → bytes of everything under `p` (a file: itself under "").
fn snapshot(p: &Path) -> BTreeMap<String, Vec<u8>> {
    if p.is_file() {
        return BTreeMap::from([(String::new(), std::fs::read(p).unwrap())]);
    }
    tree(p)
        .into_iter()
        .filter(|rel| p.join(rel).is_file())
        .map(|rel| {
            let b = std::fs::read(p.join(&rel)).unwrap();
            (rel, b)
        })
        .collect()
}

/// Run `cmd`, SIGKILL it after `delay` unless it finished; true if the kill landed.
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let killed = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    killed
}

fn timed(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    t.elapsed()
}

/// Kill `make(dest)` at `points` seeded moments; after each, `dest` is absent or equals the
/// reference, and a rerun into `dest` (when absent) completes and leaves no temp entry in
/// `work`. Returns how many kills landed while the command ran.
fn kill_and_rerun(
    work: &Path,
    make: &dyn Fn(&Path) -> Command,
    dest_name: &str,
    points: usize,
    seed: u64,
) -> usize {
    let reference = work.join(format!("reference-{dest_name}"));
    let took = timed(make(&reference));
    eprintln!("{dest_name}: an uninterrupted run takes {took:?}");
    let want = snapshot(&reference);
    let mut rng = Rng(seed);
    let mut landed = 0;
    for i in 0..points {
        let dest = work.join(format!("{i}-{dest_name}"));
        let delay = took.mul_f64(1.1 * rng.unit());
        if kill_after(make(&dest), delay) {
            landed += 1;
        }
        if dest.exists() {
            assert!(
                snapshot(&dest) == want,
                "kill {i} at {delay:?}: {} exists but is not complete",
                dest.display()
            );
        } else {
            // the next run into the same destination cleans up after the killed one
            timed(make(&dest));
            assert!(
                snapshot(&dest) == want,
                "rerun {i} differs from the reference"
            );
        }
        // nothing hidden in `work`: a killed run's temp entries were removed by the rerun into
        // the same place (a run that got as far as its rename left none)
        let hidden: Vec<String> = std::fs::read_dir(work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            hidden.is_empty(),
            "after kill {i} at {delay:?}: left behind {hidden:?}"
        );
    }
    landed
}

/// A model directory of two shards (an index) whose q/k/v projections a rank-`r` PEFT
/// adapter changes, big enough that baking it takes a while.
fn model_and_adapter(dir: &Path, layers: usize, dim: usize, r: usize) -> (PathBuf, PathBuf) {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let mut tensors = Vec::new();
    for l in 0..layers {
        for p in ["q_proj", "k_proj", "v_proj"] {
            let name = format!("model.layers.{l}.self_attn.{p}.weight");
            let t = Tensor::from_f32(
                vec![dim, dim],
                &values(dim * dim, tensors.len() as u64),
                DType::F32,
            )
            .unwrap();
            tensors.push((name, t));
        }
    }
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&tensors[..half], &tensors[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let pending: Vec<PendingTensor> = part
            .iter()
            .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
            .collect();
        write_safetensors(&model.join(&file), &pending, None, &|_| {}).unwrap();
        for (n, _) in part.iter() {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        model.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::copy(fixture("tiny_llama/config.json"), model.join("config.json")).unwrap();

    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        format!(r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": {r}, "target_modules": ["q_proj", "k_proj", "v_proj"]}}"#),
    )
    .unwrap();
    let mut lora = Vec::new();
    for (i, (name, _)) in tensors.iter().enumerate() {
        let module = name.trim_end_matches(".weight");
        let a =
            Tensor::from_f32(vec![r, dim], &values(r * dim, 1000 + i as u64), DType::F32).unwrap();
        let b =
            Tensor::from_f32(vec![dim, r], &values(dim * r, 2000 + i as u64), DType::F32).unwrap();
        lora.push((format!("base_model.model.{module}.lora_A.weight"), a));
        lora.push((format!("base_model.model.{module}.lora_B.weight"), b));
    }
    let pending: Vec<PendingTensor> = lora
        .iter()
        .map(|(n, t)| PendingTensor::from_tensor(n.clone(), t))
        .collect();
    write_safetensors(
        &adapter.join("adapter_model.safetensors"),
        &pending,
        None,
        &|_| {},
    )
    .unwrap();
    (model, adapter)
}

#[test]
fn bake_into_a_directory_killed_at_random_points() {
    let work = tempfile::tempdir().unwrap();
    let (model, adapter) = model_and_adapter(work.path(), 6, 512, 64);
    // a stale temp entry inside the base (a killed writer's) is not part of the model
    std::fs::write(
        model.join(".loratool-tmp-model.safetensors.AbC123"),
        b"partial",
    )
    .unwrap();
    let out = work.path().join("outputs");
    std::fs::create_dir_all(&out).unwrap();
    let make = |dest: &Path| {
        let mut c = loratool();
        c.args(["bake"])
            .arg(&model)
            .arg(&adapter)
            .arg("-o")
            .arg(dest);
        c
    };
    let landed = kill_and_rerun(&out, &make, "baked", 8, 0x5eed_ba4e);
    assert!(
        landed >= 4,
        "only {landed} of 8 kills landed while bake ran"
    );
    let reference = out.join("reference-baked");
    assert!(
        !tree(&reference)
            .iter()
            .any(|p| p.contains(".loratool-tmp-")),
        "a temp entry was copied into the output: {:?}",
        tree(&reference)
    );
}

#[test]
fn quantize_killed_at_random_points() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model-f32.gguf");
    let dim = 1024;
    let data: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            values(dim * dim / 2, i)
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        })
        .collect();
    let mut kv = indexmap::IndexMap::new();
    kv.insert(
        "general.architecture".to_string(),
        GgufValue::String("llama".into()),
    );
    let tensors: Vec<PendingGgufTensor> = data
        .iter()
        .enumerate()
        .map(|(i, bytes)| PendingGgufTensor {
            name: format!("blk.{i}.ffn_up.weight"),
            dims: vec![dim as u64, dim as u64 / 2],
            ggml_type: 0,
            data: Box::new(move || Ok(std::borrow::Cow::Borrowed(bytes.as_slice()))),
            written: None,
        })
        .collect();
    write_gguf(&model, &kv, &tensors, &|_| {}).unwrap();
    let out = work.path().join("outputs");
    std::fs::create_dir_all(&out).unwrap();
    let make = |dest: &Path| {
        let mut c = loratool();
        c.args(["quantize"])
            .arg(&model)
            .args(["--type", "q4_k", "-o"])
            .arg(dest);
        c
    };
    let landed = kill_and_rerun(&out, &make, "q4_k.gguf", 8, 0x0009_4a4e);
    assert!(
        landed >= 4,
        "only {landed} of 8 kills landed while quantize ran"
    );
}

/// `add` killed at random points (the store's test hook slows each step), then `gc` killed at
/// random points while it deletes garbage: after each kill the store verifies, every tag names a
/// complete adapter, and the next `gc` leaves no temp file of the killed runs.
#[test]
fn registry_add_and_gc_killed_at_random_points() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let reg = |args: &[&str]| {
        let mut c = loratool();
        c.env("LORATOOL_HOME", &store).args(args);
        c
    };
    let ok = |args: &[&str]| {
        let o = reg(args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let sources = [
        fixture("gen_sd15_kohya.safetensors"),
        fixture("peft/plain"),
        fixture("gen_sdxl_kohya.safetensors"),
    ];
    let verify_and_check_tags = |when: &str| {
        let o = reg(&["verify"]).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "verify after {when}: {}",
            text(&o)
        );
        let export = work.path().join("export");
        for (i, src) in sources.iter().enumerate() {
            let tag = format!("a{i}:v1");
            if reg(&["show", &tag]).output().unwrap().status.success() {
                let _ = std::fs::remove_dir_all(&export);
                ok(&["export", &tag, "-o", export.to_str().unwrap()]);
                let want = if src.is_dir() {
                    snapshot(src)
                } else {
                    BTreeMap::from([(
                        src.file_name().unwrap().to_string_lossy().into_owned(),
                        std::fs::read(src).unwrap(),
                    )])
                };
                let got = snapshot(&export);
                let got: BTreeMap<String, Vec<u8>> = got
                    .into_iter()
                    .filter(|(k, _)| want.contains_key(k))
                    .collect();
                assert!(
                    got == want,
                    "{tag} after {when} is not the complete adapter"
                );
            }
        }
    };
    ok(&["list"]);
    let mut rng = Rng(0x000a_dd9c);
    let mut landed = 0;
    let slow = |c: &mut Command| {
        c.env("LORATOOL_TEST_SLOW_ADD_MS", "15");
    };
    let took = {
        let mut c = reg(&["add", sources[0].to_str().unwrap(), "--name", "probe:v1"]);
        slow(&mut c);
        timed(c)
    };
    ok(&["rm", "probe:v1"]);
    for round in 0..6 {
        let i = round % sources.len();
        let tag = format!("a{i}:v1");
        let mut c = reg(&["add", sources[i].to_str().unwrap(), "--name", &tag]);
        slow(&mut c);
        if kill_after(c, took.mul_f64(1.1 * rng.unit())) {
            landed += 1;
        }
        verify_and_check_tags(&format!("add killed in round {round}"));
    }
    assert!(landed >= 3, "only {landed} of 6 kills landed inside add");
    // garbage for gc to delete: every adapter added and untagged
    for (i, src) in sources.iter().enumerate() {
        ok(&["add", src.to_str().unwrap(), "--name", &format!("a{i}:v1")]);
    }
    ok(&["rm", "a1:v1"]);
    ok(&["rm", "a2:v1"]);
    let gc_took = {
        let mut c = reg(&["gc", "--dry-run"]);
        slow(&mut c);
        timed(c)
    };
    for round in 0..4 {
        let mut c = reg(&["gc"]);
        slow(&mut c);
        kill_after(c, gc_took.mul_f64(1.1 * rng.unit()));
        verify_and_check_tags(&format!("gc killed in round {round}"));
    }
    ok(&["gc"]);
    assert_eq!(
        tree(&store.join("tmp")),
        Vec::<String>::new(),
        "temp files of killed runs survive gc"
    );
    let mut root: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["blobs", "index.json", "lock", "oci-layout", "tmp"]);
    verify_and_check_tags("the last gc");
    let left = tree(&store.join("blobs/sha256")).len();
    let listed = ok(&["list"]);
    assert!(listed.contains("a0:v1"), "{listed}");
    assert!(left >= 3, "a0's blobs were collected: {left} left");
}
