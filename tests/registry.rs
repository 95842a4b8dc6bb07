//! The adapter registry end to end, through the `loratool` binary with `LORATOOL_HOME` set to
//! a temp dir: OCI layout, round trips, dedup, tags, gc, verify, hostile names, references,
//! `--save` lineage, crash safety under SIGKILL, concurrency, and skopeo interop.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private store and a way to run loratool against it.
struct Reg {
    home: tempfile::TempDir,
}

impl Reg {
    fn new() -> Reg {
        Reg { home: tempdir() }
    }
    fn root(&self) -> &Path {
        self.home.path()
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loratool"));
        c.args(args).env("LORATOOL_HOME", self.root());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run loratool")
    }
    /// Run and require success.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }
    /// `add`, returning the manifest digest it printed.
    fn add(&self, path: &Path, name: &str) -> String {
        let out = self.ok(&["add", path.to_str().unwrap(), "--name", name]);
        out.split_whitespace().last().unwrap().to_string()
    }
    fn blob(&self, digest: &str) -> PathBuf {
        self.root()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }
    fn blob_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.root().join("index.json")).unwrap()).unwrap()
    }
}

fn sha256_file(p: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
    )
}

fn kohya() -> PathBuf {
    fixture("kohya/sd15_lora_r8_a8_attn.safetensors")
}

fn peft() -> PathBuf {
    fixture("peft/plain")
}

/// Every tag in index.json has its manifest, config and layers present, each hashing to its
/// name; returns the number of tags.
fn assert_store_consistent(reg: &Reg) -> usize {
    let index = reg.index();
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    for m in manifests {
        let digest = m["digest"].as_str().unwrap();
        let bytes = std::fs::read(reg.blob(digest)).expect("manifest blob present");
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            digest
        );
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        let mut needed = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
        for l in manifest["layers"].as_array().unwrap() {
            needed.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in needed {
            assert_eq!(sha256_file(&reg.blob(&d)), d, "blob {d} of {digest}");
        }
    }
    manifests.len()
}

#[test]
fn store_is_an_oci_image_layout_with_modelpack_manifests() {
    let reg = Reg::new();
    let digest = reg.add(&peft(), "acme/plain:v1");
    let layout: Value =
        serde_json::from_slice(&std::fs::read(reg.root().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index = reg.index();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "acme/plain:v1"
    );
    assert_eq!(sha256_file(&reg.blob(&digest)), digest);
    let m: Value = serde_json::from_slice(&std::fs::read(reg.blob(&digest)).unwrap()).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    let mut titles = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let title = l["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap();
        let original = peft().join(title);
        assert_eq!(l["digest"], sha256_file(&original).as_str(), "{title}");
        assert_eq!(l["size"], std::fs::metadata(&original).unwrap().len());
        let want = if title.ends_with(".json") {
            "application/vnd.cncf.model.weight.config.v1.raw"
        } else {
            "application/vnd.cncf.model.weight.v1.raw"
        };
        assert_eq!(l["mediaType"], want);
        titles.push(title.to_string());
    }
    titles.sort();
    assert_eq!(titles, ["adapter_config.json", "adapter_model.safetensors"]);
    let config: Value = serde_json::from_slice(
        &std::fs::read(reg.blob(m["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["loratool"]["format"], "peft");
    assert_eq!(config["loratool"]["ranks"], serde_json::json!([4]));
    assert_eq!(config["modelfs"]["type"], "layers");
}

#[test]
fn add_list_show_export_round_trip_is_byte_identical() {
    let reg = Reg::new();
    let pd = reg.add(&peft(), "acme/plain:v1");
    let kd = reg.add(&kohya(), "style:v1");
    let list = reg.json(&["list", "--json"]);
    let refs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["acme/plain:v1", "style:v1"]);
    let only_kohya = reg.json(&["list", "--json", "--format", "kohya"]);
    assert_eq!(only_kohya.as_array().unwrap().len(), 1);
    assert_eq!(only_kohya[0]["digest"], kd.as_str());
    assert_eq!(
        reg.json(&["list", "--json", "--name", "acme/"])[0]["digest"],
        pd.as_str()
    );
    let base = reg.json(&["list", "--json", "--base", "tiny_llama"]);
    assert_eq!(base.as_array().unwrap().len(), 1, "{base}");
    let table = reg.ok(&["list"]);
    assert!(
        table.contains("acme/plain:v1") && table.contains("style:v1"),
        "{table}"
    );

    let show = reg.json(&["show", "style:v1", "--json"]);
    assert_eq!(show["format"], "kohya");
    assert_eq!(show["files"][0]["digest"], sha256_file(&kohya()).as_str());
    assert_eq!(show["ranks"], serde_json::json!([8]));
    let text = reg.ok(&["show", "acme/plain:v1"]);
    assert!(
        text.contains("adapter_model.safetensors") && text.contains(&pd),
        "{text}"
    );

    let out = tempdir();
    reg.ok(&[
        "export",
        "acme/plain:v1",
        "-o",
        out.path().to_str().unwrap(),
    ]);
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(peft().join(f)).unwrap(),
            "{f}"
        );
    }
    reg.ok(&["export", "style:v1", "-o", out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.path().join(kohya().file_name().unwrap())).unwrap(),
        std::fs::read(kohya()).unwrap()
    );
}

#[test]
fn export_to_a_format_converts_through_the_writers() {
    let reg = Reg::new();
    reg.add(&kohya(), "style:v1");
    let out = tempdir();
    let dest = out.path().join("style-peft");
    reg.ok(&[
        "export",
        "style:v1",
        "--to",
        "diffusers",
        "-o",
        dest.to_str().unwrap(),
    ]);
    let ro = loratool::adapter::ReadOptions::default();
    let original = loratool::adapter::codec::read_adapter(&kohya(), None, &ctx(ro)).unwrap();
    let exported = loratool::adapter::codec::read_adapter(&dest, None, &ctx(ro)).unwrap();
    assert_same_layers(&original, &exported);
}

#[test]
fn adding_the_same_files_twice_stores_each_blob_once() {
    let reg = Reg::new();
    reg.add(&kohya(), "a:v1");
    let before = reg.blob_names();
    reg.add(&kohya(), "b:v1");
    let after = reg.blob_names();
    let weights = sha256_file(&kohya());
    let hex = weights.strip_prefix("sha256:").unwrap();
    assert_eq!(after.iter().filter(|n| n.as_str() == hex).count(), 1);
    // the second add adds only its own config and manifest (names and times differ)
    assert_eq!(before.len(), 3);
    assert_eq!(after.len(), 5, "{after:?}");
    let total: u64 = after
        .iter()
        .map(|n| {
            std::fs::metadata(reg.root().join("blobs/sha256").join(n))
                .unwrap()
                .len()
        })
        .sum();
    assert!(total < 2 * std::fs::metadata(kohya()).unwrap().len());
}

#[test]
fn tag_rm_and_gc_delete_only_unreachable_blobs() {
    let reg = Reg::new();
    let kd = reg.add(&kohya(), "style:v1");
    let pd = reg.add(&peft(), "acme/plain:v1");
    assert!(reg.ok(&["tag", "style:v1", "style:stable"]).contains(&kd));
    reg.ok(&["rm", "style:v1"]);
    // the other tag keeps the adapter
    assert_eq!(
        reg.json(&["show", "style:stable", "--json"])["digest"],
        kd.as_str()
    );
    let o = reg.run(&["show", "style:v1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("style:v1"), "{}", stderr(&o));

    reg.ok(&["rm", "acme/plain:v1"]);
    let before = reg.blob_names();
    let dry = reg.ok(&["gc", "--dry-run"]);
    assert!(dry.contains(&pd), "{dry}");
    assert_eq!(reg.blob_names(), before, "dry run deleted something");
    reg.ok(&["gc"]);
    assert!(!reg.blob(&pd).exists());
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(!reg.blob(&sha256_file(&peft().join(f))).exists(), "{f}");
    }
    assert!(reg.blob(&kd).exists());
    assert!(reg.blob(&sha256_file(&kohya())).exists());
    assert_eq!(assert_store_consistent(&reg), 1);
    reg.ok(&["verify"]);
    let o = reg.run(&["rm", "nothing:here"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn verify_names_a_corrupt_blob_and_exits_non_zero() {
    let reg = Reg::new();
    reg.add(&kohya(), "style:v1");
    reg.ok(&["verify"]);
    let weights = sha256_file(&kohya());
    let path = reg.blob(&weights);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let o = reg.run(&["verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!("corrupt: {weights}")),
        "{}",
        stdout(&o)
    );
    // export refuses to hand out the damaged bytes
    let out = tempdir();
    let o = reg.run(&["export", "style:v1", "-o", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
}

#[test]
fn verify_names_a_missing_blob_and_exits_non_zero() {
    let reg = Reg::new();
    reg.add(&peft(), "acme/plain:v1");
    let model = sha256_file(&peft().join("adapter_model.safetensors"));
    std::fs::remove_file(reg.blob(&model)).unwrap();
    let o = reg.run(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["missing"][0]["digest"], model.as_str());
    assert!(v["missing"][0]["needed_by"]
        .as_str()
        .unwrap()
        .contains("adapter_model.safetensors"));
}

#[test]
fn hostile_names_are_refused_and_leave_the_store_unchanged() {
    let reg = Reg::new();
    reg.ok(&["list"]); // creates the empty store
    let long = format!("{}:1", "a".repeat(300));
    let long_tag = format!("a:{}", "t".repeat(200));
    for bad in [
        "../x:1",
        "a/b/c:1",
        "UPPER:1",
        "x:",
        "a/../b:1",
        "/abs:1",
        "a..b:1",
        "x:-v",
        &long,
        &long_tag,
        "a b:1",
        "x:tag/../../y",
    ] {
        let o = reg.run(&["add", kohya().to_str().unwrap(), "--name", bad]);
        assert_eq!(o.status.code(), Some(1), "{bad} accepted");
        assert!(
            stderr(&o).contains("invalid reference"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    assert_eq!(reg.index()["manifests"].as_array().unwrap().len(), 0);
    assert!(reg.blob_names().is_empty(), "{:?}", reg.blob_names());
}

#[test]
fn hostile_index_entries_are_not_followed_as_paths() {
    let reg = Reg::new();
    reg.add(&kohya(), "style:v1");
    let mut index = reg.index();
    index["manifests"][0]["digest"] = Value::from("sha256:../../../../etc/passwd");
    std::fs::write(reg.root().join("index.json"), index.to_string()).unwrap();
    for args in [&["show", "style:v1"][..], &["verify"], &["gc"]] {
        let o = reg.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
    }
    assert!(stderr(&reg.run(&["show", "style:v1"])).contains("not a sha256 digest"));
}

#[test]
fn references_are_accepted_where_paths_are() {
    let reg = Reg::new();
    let kd = reg.add(&kohya(), "acme/style:v1");
    let info = reg.json(&["info", "acme/style:v1", "--json"]);
    assert_eq!(info["format"], "kohya");
    let by_digest = format!("acme/style@{kd}");
    let info = reg.json(&["info", &by_digest, "--json"]);
    assert_eq!(
        info["modules"],
        reg.json(&["info", kohya().to_str().unwrap(), "--json"])["modules"]
    );
    let out = tempdir();
    let dest = out.path().join("d");
    reg.ok(&[
        "convert",
        &by_digest,
        "--to",
        "diffusers",
        "-o",
        dest.to_str().unwrap(),
    ]);
    let ro = loratool::adapter::ReadOptions::default();
    let a = loratool::adapter::codec::read_adapter(&kohya(), None, &ctx(ro)).unwrap();
    let b = loratool::adapter::codec::read_adapter(&dest, None, &ctx(ro)).unwrap();
    assert_same_layers(&a, &b);
    // a digest under another name, and an unknown tag, are not found
    let o = reg.run(&["info", &format!("other@{kd}")]);
    assert_eq!(o.status.code(), Some(1));
    let o = reg.run(&["convert", "acme/style:v9", "--to", "peft", "-o", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("acme/style:v9"), "{}", stderr(&o));
}

#[test]
fn an_existing_path_wins_over_a_reference() {
    let reg = Reg::new();
    reg.add(&peft(), "acme:v1");
    let dir = tempdir();
    std::fs::copy(kohya(), dir.path().join("acme:v1")).unwrap();
    let o = reg
        .cmd(&["info", "acme:v1", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "kohya");
}

#[test]
fn save_records_merge_lineage_that_show_prints() {
    let reg = Reg::new();
    let a = reg.add(&peft(), "acme/a:v1");
    let b = reg.add(&fixture("peft/plain2"), "acme/b:v1");
    let out = tempdir();
    let dest = out.path().join("merged");
    reg.ok(&[
        "merge",
        "acme/a:v1",
        "acme/b:v1",
        "--weights",
        "0.7,0.3",
        "-o",
        dest.to_str().unwrap(),
        "--save",
        "acme/merged:v1",
    ]);
    let v = reg.json(&["show", "acme/merged:v1", "--json"]);
    let lineage = &v["lineage"];
    assert_eq!(lineage["operation"], "merge");
    assert_eq!(lineage["summary"], "merge(sum, weights 0.7/0.3)");
    assert_eq!(
        lineage["parameters"]["weights"],
        serde_json::json!([0.7, 0.3])
    );
    let inputs: Vec<(&str, &str)> = lineage["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(inputs, [("manifest", a.as_str()), ("manifest", b.as_str())]);
    // the stored files are the ones merge wrote
    assert_eq!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "adapter_model.safetensors")
            .unwrap()["digest"],
        sha256_file(&dest.join("adapter_model.safetensors")).as_str()
    );
    let text = reg.ok(&["show", "acme/merged:v1"]);
    assert!(text.contains("merge(sum, weights 0.7/0.3)"), "{text}");
    assert!(
        text.contains(&a) && text.contains(&b) && text.contains("acme/a:v1"),
        "{text}"
    );
    // and the inputs' own lineage below them
    assert!(text.contains("add("), "{text}");
}

#[test]
fn save_from_a_path_records_the_input_files_sha256() {
    let reg = Reg::new();
    let out = tempdir();
    let dest = out.path().join("r.safetensors");
    reg.ok(&[
        "resize",
        kohya().to_str().unwrap(),
        "--rank",
        "2",
        "-o",
        dest.to_str().unwrap(),
        "--save",
        "style:r2",
    ]);
    let v = reg.json(&["show", "style:r2", "--json"]);
    assert_eq!(v["lineage"]["operation"], "resize");
    assert_eq!(v["lineage"]["inputs"][0]["kind"], "files");
    assert_eq!(
        v["lineage"]["inputs"][0]["digest"],
        sha256_file(&kohya()).as_str()
    );
    assert_eq!(v["ranks"], serde_json::json!([2]));
    reg.ok(&["verify"]);
}

#[test]
fn sigkill_during_add_leaves_a_store_that_verifies() {
    let reg = Reg::new();
    reg.add(&kohya(), "keep:v1");
    let mut killed_early = 0;
    for i in 0..30u64 {
        let mut child = reg
            .cmd(&[
                "add",
                peft().to_str().unwrap(),
                "--name",
                &format!("crash/n{i}:v1"),
            ])
            .env("LORATOOL_TEST_SLOW_ADD_MS", "4")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3 + i * 2));
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        if !status.success() {
            killed_early += 1;
        }
        let o = reg.run(&["verify"]);
        assert_eq!(o.status.code(), Some(0), "after kill {i}: {}", stdout(&o));
        let tags = assert_store_consistent(&reg);
        assert!(tags >= 1, "the earlier adapter was lost");
    }
    assert!(
        killed_early > 5,
        "the kills never landed inside add ({killed_early})"
    );
    assert_eq!(reg.json(&["show", "keep:v1", "--json"])["format"], "kohya");
    reg.ok(&["gc"]);
    reg.ok(&["verify"]);
    assert_store_consistent(&reg);
}

#[test]
fn eight_concurrent_writers_and_a_collector_lose_nothing() {
    let reg = Reg::new();
    let inputs = [kohya(), peft(), fixture("peft/plain2")];
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let o = reg.run(&["gc"]);
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                runs += 1;
            }
            runs
        });
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let input = inputs[i % inputs.len()].clone();
                let reg = &reg;
                s.spawn(move || {
                    let name = format!("team/w{i}:v1");
                    let o = reg
                        .cmd(&["add", input.to_str().unwrap(), "--name", &name])
                        .env("LORATOOL_TEST_SLOW_ADD_MS", "3")
                        .output()
                        .unwrap();
                    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                    let o = reg.run(&["tag", &name, &format!("team/w{i}:stable")]);
                    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                })
            })
            .collect();
        // join every writer before stopping the collector, so a failing writer cannot leave
        // the collector looping forever
        let results: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs = collector.join();
        for r in results {
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        }
        assert!(runs.unwrap() > 0);
    });
    reg.ok(&["gc"]);
    for i in 0..8 {
        for tag in ["v1", "stable"] {
            let v = reg.json(&["show", &format!("team/w{i}:{tag}"), "--json"]);
            let input = &inputs[i % inputs.len()];
            let weights = if input.is_dir() {
                input.join("adapter_model.safetensors")
            } else {
                input.clone()
            };
            let files = v["files"].as_array().unwrap();
            assert!(files
                .iter()
                .any(|f| f["digest"] == sha256_file(&weights).as_str()));
        }
    }
    assert_eq!(assert_store_consistent(&reg), 16);
    reg.ok(&["verify"]);
}

#[test]
fn skopeo_reads_the_store() {
    let have = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        if std::env::var_os("CI").is_some() {
            panic!(
                "skopeo is not installed; CI installs it in .ci/run (apt-get install -y skopeo)"
            );
        }
        eprintln!(
            "skipping skopeo_reads_the_store: skopeo is not installed (apt-get install -y skopeo)"
        );
        return;
    }
    let reg = Reg::new();
    let digest = reg.add(&peft(), "acme/plain:v1");
    reg.add(&kohya(), "style:v1");
    let target = format!("oci:{}:acme/plain:v1", reg.root().display());
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", &target])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&o.stdout))),
        digest
    );
    // copying verifies every blob's digest on the way
    let out = tempdir();
    let dest = format!("dir:{}", out.path().join("copy").display());
    let o = Command::new("skopeo")
        .args(["copy", &target, &dest])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let weights = sha256_file(&peft().join("adapter_model.safetensors"));
    let copied = out
        .path()
        .join("copy")
        .join(weights.strip_prefix("sha256:").unwrap());
    assert_eq!(
        std::fs::read(copied).unwrap(),
        std::fs::read(peft().join("adapter_model.safetensors")).unwrap()
    );
}

#[test]
fn gc_between_an_adds_blob_writes_and_its_index_update_loses_nothing() {
    let reg = Reg::new();
    reg.add(&kohya(), "old:v1");
    reg.ok(&["rm", "old:v1"]); // the weights blob is now unreferenced
    let weights = sha256_file(&kohya());
    // each step of this add sleeps 300 ms: it finds the weights blob present (dedup) at
    // ~300 ms and takes the lock only at ~1200 ms
    let child = reg
        .cmd(&["add", kohya().to_str().unwrap(), "--name", "new:v1"])
        .env("LORATOOL_TEST_SLOW_ADD_MS", "300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(750));
    let gc = reg.ok(&["gc"]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(gc.contains(&weights), "gc ran outside the window: {gc}");
    reg.ok(&["verify"]);
    assert_eq!(assert_store_consistent(&reg), 1);
    let out = tempdir();
    reg.ok(&["export", "new:v1", "-o", out.path().to_str().unwrap()]);
    assert_eq!(
        std::fs::read(out.path().join(kohya().file_name().unwrap())).unwrap(),
        std::fs::read(kohya()).unwrap()
    );
}

/// A non-llama GGUF adapter (qwen2: no q/k permutation), written by loratool from the PEFT
/// fixture against a qwen2-flavoured copy of the tiny llama config.
fn qwen2_gguf(dir: &Path) -> PathBuf {
    let cfg = std::fs::read_to_string(fixture("tiny_llama/config.json"))
        .unwrap()
        .replace("\"llama\"", "\"qwen2\"")
        .replace("LlamaForCausalLM", "Qwen2ForCausalLM");
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = dir.join("qwen2-adapter.gguf");
    run_ok(&[
        "convert",
        s(&peft()),
        "--to",
        "gguf",
        "--base",
        s(&cfg_path),
        "-o",
        s(&out),
    ]);
    out
}

#[test]
fn every_adapter_format_is_stored_byte_for_byte_and_described_as_info_describes_it() {
    let reg = Reg::new();
    let dir = tempdir();
    let diffusers = dir.path().join("style-diffusers.safetensors");
    run_ok(&[
        "convert",
        s(&kohya()),
        "--to",
        "diffusers",
        "-o",
        s(&diffusers),
    ]);
    let inputs: Vec<(PathBuf, &str, &str)> = vec![
        (peft(), "t/peft:v1", "peft"),
        (kohya(), "t/kohya:v1", "kohya"),
        (diffusers, "t/diffusers:v1", "diffusers"),
        // a llama GGUF adapter: stored without --base (its q/k rows stay as they are)
        (fixture("gguf/plain-f32.gguf"), "t/g:v1", "gguf"),
        (fixture("gguf/plain-q8_0.gguf"), "t/gq:v1", "gguf"),
        (qwen2_gguf(dir.path()), "t/qwen2:v1", "gguf"),
    ];
    for (path, name, format) in &inputs {
        reg.add(path, name);
        let show = reg.json(&["show", name, "--json"]);
        assert_eq!(show["format"], *format, "{name}");
        // the stored description is the one `info` prints for the original path
        let info = reg.json(&["info", s(path), "--json"]);
        let summary = &show["summary"];
        for key in [
            "format",
            "family",
            "base_model",
            "modules",
            "layer_kinds",
            "ranks",
            "dtypes",
            "params",
            "targets",
            "dora",
            "full_tensors",
        ] {
            assert_eq!(summary[key], info[key], "{name}: {key}");
        }
        // ... and `info` on the reference says the same
        let by_ref = reg.json(&["info", name, "--json"]);
        for key in ["format", "modules", "ranks", "targets", "params"] {
            assert_eq!(by_ref[key], info[key], "{name}: info by reference, {key}");
        }
        // the text blocks of info and show agree line for line (show adds digest, tags, files)
        let info_text = reg.ok(&["info", s(path)]);
        let show_text = reg.ok(&["show", name]);
        for line in info_text
            .lines()
            .skip(1)
            .filter(|l| !l.contains("file size"))
        {
            if line.starts_with("  container") {
                break; // the GGUF container lines are info's own
            }
            assert!(
                show_text.contains(line),
                "{name}: show lacks {line:?}\n{show_text}"
            );
        }
        // exported files are the added files, byte for byte
        let out = tempdir();
        reg.ok(&["export", name, "-o", s(out.path())]);
        let original: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        } else {
            vec![path.clone()]
        };
        for f in original {
            let exported = out.path().join(f.file_name().unwrap());
            assert_eq!(
                std::fs::read(&exported).unwrap(),
                std::fs::read(&f).unwrap(),
                "{name}: {}",
                f.display()
            );
        }
    }
    // the targets are named as info names them (`to_out.0`, not `0`)
    let show = reg.json(&["show", "t/kohya:v1", "--json"]);
    let targets = show["target_modules"].as_array().unwrap();
    assert!(targets.iter().any(|t| t == "to_out.0"), "{targets:?}");
    assert!(!targets.iter().any(|t| t == "0"), "{targets:?}");
    assert_store_consistent(&reg);
}

#[test]
fn a_gguf_model_is_refused_by_add_with_a_clear_message() {
    let reg = Reg::new();
    let o = reg.run(&[
        "add",
        s(&fixture("tiny_llama-f32.gguf")),
        "--name",
        "t/model:v1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("a model, not a LoRA adapter"),
        "{}",
        stderr(&o)
    );
    assert!(!reg.root().join("index.json").exists() || assert_store_consistent(&reg) == 0);
}
