//! Hostile and failing servers: wrong bytes, truncated bodies, lying Content-Length, stalls,
//! 401/429/500 answers, redirects to other hosts. Each gives a clear error, leaves no partial
//! or unverified file in the HF cache or the store, and never shows or sends a token where it
//! does not belong. Servers: tests/hub_server/server.py (the loopback Hub with fault
//! injection) and tests/hub_server/fake_registry.py (an OCI registry over a store's layout).

mod remote_support;
mod robust;

use remote_support::*;
use serde_json::json;
use std::path::Path;

const UPLOAD: &str = r#"
import sys
from huggingface_hub import HfApi
api = HfApi(token=sys.argv[1])
api.create_repo(sys.argv[2], exist_ok=True)
print(api.upload_folder(repo_id=sys.argv[2], folder_path=sys.argv[3]).oid)
"#;

/// A Hub holding fixtures/peft/plain as alice/plain, and an environment with a token.
fn hub_with_plain(extra: &[&str]) -> Option<(HubServer, Env)> {
    if !have_huggingface_hub() {
        return None;
    }
    let hub = HubServer::start(extra);
    let mut env = Env::new(&hub.endpoint);
    env.python_ok(
        UPLOAD,
        &[
            WRITE_TOKEN,
            "alice/plain",
            fixture("peft/plain").to_str().unwrap(),
        ],
    );
    env.set("HF_TOKEN", WRITE_TOKEN);
    env.set("LORATOOL_HTTP_RETRIES", "2");
    hub.reset();
    Some((hub, env))
}

/// No partial download, no unverified blob, no link to the failed file.
fn assert_cache_clean(env: &Env, failed_file: &str) {
    let repo = env.cache().join("models--alice--plain");
    for rel in files_under(&repo) {
        let name = rel.to_string_lossy().to_string();
        assert!(
            !name.ends_with(".incomplete"),
            "partial download left: {name}"
        );
        assert!(
            !name.ends_with(failed_file),
            "the failed file is linked: {name}"
        );
        if let Some(blob) = name.strip_prefix("blobs/") {
            let bytes = std::fs::read(repo.join(&rel)).unwrap();
            if blob.len() == 64 {
                assert_eq!(sha256_hex(&bytes), blob, "unverified blob {name}");
            }
        }
    }
}

fn pull_fails(env: &Env, needle: &str) -> String {
    let o = env.loratool(&["pull", "hf://alice/plain"]);
    assert!(!o.status.success(), "pull succeeded: {}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains(needle), "expected '{needle}' in: {e}");
    e
}

#[test]
fn lfs_bytes_that_do_not_match_their_sha256_are_refused() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(
        json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "wrong-bytes", "times": 100}]),
    );
    pull_fails(&env, "but the Hub names it");
    assert_cache_clean(&env, "adapter_model.safetensors");
}

#[test]
fn regular_file_bytes_that_do_not_match_their_git_oid_are_refused() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(json!([{"origin": "main-body", "match": "adapter_config.json", "kind": "wrong-bytes", "times": 100}]));
    pull_fails(&env, "but the Hub names it");
    assert_cache_clean(&env, "adapter_config.json");
}

#[test]
fn a_body_cut_short_every_time_fails_after_bounded_resumes() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "truncate", "times": 100}]));
    pull_fails(&env, "adapter_model.safetensors");
    assert_cache_clean(&env, "adapter_model.safetensors");
    let (log, _) = hub.log();
    let gets = log
        .iter()
        .filter(|r| r["origin"] == "cdn" && r["method"] == "GET")
        .count();
    assert_eq!(gets, 3, "one try and LORATOOL_HTTP_RETRIES=2 resumes");
}

#[test]
fn a_lying_content_length_is_refused() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(
        json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "short-length", "times": 100}]),
    );
    pull_fails(&env, "but the file has");
    assert_cache_clean(&env, "adapter_model.safetensors");
}

#[test]
fn a_dropped_connection_is_resumed_with_range() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "truncate", "times": 1}]));
    let v: serde_json::Value =
        serde_json::from_str(&env.loratool_ok(&["pull", "hf://alice/plain", "--json"])).unwrap();
    let got =
        std::fs::read(Path::new(v["path"].as_str().unwrap()).join("adapter_model.safetensors"))
            .unwrap();
    assert_eq!(
        got,
        std::fs::read(fixture("peft/plain/adapter_model.safetensors")).unwrap()
    );
    let (log, cdn_auth) = hub.log();
    let size = got.len();
    let resumed = log
        .iter()
        .find(|r| r["origin"] == "cdn" && r["range"].is_string())
        .expect("a Range request");
    assert_eq!(resumed["range"], format!("bytes={}-", size / 2));
    assert!(cdn_auth.is_empty());
}

#[test]
fn a_stalled_server_times_out() {
    let Some((hub, mut env)) = hub_with_plain(&[]) else {
        return;
    };
    env.set("LORATOOL_HTTP_TIMEOUT", "1")
        .set("LORATOOL_HTTP_RETRIES", "0");
    hub.faults(json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "stall", "seconds": 20, "times": 100}]));
    let t = std::time::Instant::now();
    pull_fails(&env, "timed out");
    assert!(t.elapsed().as_secs() < 15, "took {:?}", t.elapsed());
    assert_cache_clean(&env, "adapter_model.safetensors");
}

#[test]
fn rate_limits_and_server_errors_are_retried_a_bounded_number_of_times() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    let rev = "/api/models/alice/plain/revision/main";
    hub.faults(json!([{"match": rev, "kind": "status", "status": 429, "headers": {"Retry-After": "0"}, "times": 2}]));
    env.loratool_ok(&["pull", "hf://alice/plain"]);
    let count = |log: &[serde_json::Value]| log.iter().filter(|r| r["path"] == rev).count();
    assert_eq!(count(&hub.log().0), 3);
    hub.reset();
    hub.faults(json!([{"match": rev, "kind": "status", "status": 500, "times": 100}]));
    let e = pull_fails(&env, "HTTP 500");
    assert!(e.contains(rev), "{e}");
    assert_eq!(count(&hub.log().0), 3, "one try and two retries");
    hub.reset();
    hub.faults(json!([{"match": rev, "kind": "status", "status": 401, "times": 100}]));
    pull_fails(&env, "the token was refused");
}

#[test]
fn tokens_never_appear_in_output_files_or_other_hosts() {
    let Some((hub, mut env)) = hub_with_plain(&[]) else {
        return;
    };
    let mut outputs = Vec::new();
    let mut run = |env: &Env, args: &[&str]| {
        let o = env.loratool(args);
        outputs.push(format!("{}{}", stdout(&o), stderr(&o)));
        o.status.success()
    };
    assert!(run(
        &env,
        &["pull", "hf://alice/plain", "--save", "a/plain:v1"]
    ));
    assert!(run(
        &env,
        &["push", "a/plain:v1", "hf://alice/copy", "--json"]
    ));
    assert!(run(&env, &["info", "hf://alice/copy"]));
    hub.faults(json!([{"match": "/revision/", "kind": "status", "status": 401, "times": 100}]));
    assert!(!run(&env, &["pull", "hf://alice/copy@main"]));
    hub.faults(
        json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "wrong-bytes", "times": 100}]),
    );
    env.set("HF_HOME", env.dir.path().join("hf2").to_str().unwrap());
    assert!(!run(&env, &["pull", "hf://alice/plain"]));
    for out in &outputs {
        assert!(!out.contains(WRITE_TOKEN), "token in output: {out}");
    }
    assert_eq!(any_file_contains(env.dir.path(), WRITE_TOKEN), None);
    let (log, cdn_auth) = hub.log();
    assert!(
        cdn_auth.is_empty(),
        "token sent to another host: {cdn_auth:?}"
    );
    assert!(log.iter().any(|r| r["origin"] == "cdn"));
}

/// A store holding fixtures/peft/plain as team/plain:v1, served by the fake registry.
fn registry_with_plain(creds: Option<(&str, &str)>) -> Option<(FakeRegistry, Env, String)> {
    if !have_python() {
        return None;
    }
    let src = Env::new("http://127.0.0.1:9");
    let out = src.loratool_ok(&[
        "add",
        fixture("peft/plain").to_str().unwrap(),
        "--name",
        "team/plain:v1",
    ]);
    let digest = out.split_whitespace().last().unwrap().to_string();
    let reg = FakeRegistry::start(&src.store(), creds);
    // the source environment's store must outlive the server: keep it inside the env we return
    let mut env = Env::new("http://127.0.0.1:9");
    env.set("LORATOOL_HTTP_RETRIES", "2");
    std::mem::forget(src);
    Some((reg, env, digest))
}

fn assert_store_clean(env: &Env) {
    let store = env.store();
    if !store.exists() {
        return;
    }
    let tmp: Vec<_> = files_under(&store.join("tmp"));
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    let blobs = files_under(&store.join("blobs/sha256"));
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(!index.contains("team/plain"), "{index}");
}

fn oci_pull_fails(reg: &FakeRegistry, env: &Env, needle: &str) -> String {
    let o = env.loratool(&["pull", &format!("oci://{}/team/plain:v1", reg.addr)]);
    assert!(!o.status.success(), "pull succeeded: {}", stdout(&o));
    let e = stderr(&o);
    assert!(
        needle.split('|').any(|n| e.contains(n)),
        "expected '{needle}' in: {e}"
    );
    e
}

#[test]
fn oci_bearer_challenge_and_redirected_blobs_without_the_token() {
    let Some((reg, mut env, digest)) = registry_with_plain(Some(("u1", "p-secret-41"))) else {
        return;
    };
    oci_pull_fails(&reg, &env, "401");
    env.set("LORATOOL_REGISTRY_USERNAME", "u1")
        .set("LORATOOL_REGISTRY_PASSWORD", "p-secret-41");
    let out = env.loratool_ok(&[
        "pull",
        &format!("oci://{}/team/plain:v1", reg.addr),
        "--json",
    ]);
    assert!(out.contains(&digest));
    assert!(!out.contains("p-secret-41"));
    let log = reg.log();
    assert!(log["storage_auth"].as_array().unwrap().is_empty(), "{log}");
    assert!(log["log"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["origin"] == "storage"));
    assert_eq!(any_file_contains(&env.store(), "p-secret-41"), None);
}

#[test]
fn oci_blob_with_wrong_bytes_never_enters_the_store() {
    let Some((reg, env, _)) = registry_with_plain(None) else {
        return;
    };
    reg.faults(
        json!([{"origin": "storage", "match": "/data/", "kind": "wrong-bytes", "times": 100}]),
    );
    oci_pull_fails(&reg, &env, "hashing to");
    assert_store_clean(&env);
}

#[test]
fn oci_truncated_and_lying_bodies_never_enter_the_store() {
    let Some((reg, env, _)) = registry_with_plain(None) else {
        return;
    };
    reg.faults(json!([{"origin": "storage", "match": "/data/", "kind": "truncate", "times": 100}]));
    oci_pull_fails(&reg, &env, "bytes and 2 resumed attempts|disconnected");
    assert_store_clean(&env);
    reg.faults(
        json!([{"origin": "storage", "match": "/data/", "kind": "short-length", "times": 100}]),
    );
    oci_pull_fails(&reg, &env, "bytes");
    assert_store_clean(&env);
}

#[test]
fn oci_status_errors_and_stalls() {
    let Some((reg, mut env, digest)) = registry_with_plain(None) else {
        return;
    };
    reg.faults(json!([{"match": "/manifests/", "kind": "status", "status": 500, "times": 100}]));
    oci_pull_fails(&reg, &env, "500");
    reg.faults(json!([{"match": "/manifests/", "kind": "status", "status": 429, "headers": {"Retry-After": "0"}, "times": 2}]));
    env.loratool_ok(&[
        "pull",
        &format!("oci://{}/team/plain:v1", reg.addr),
        "--save",
        "x/y:z",
    ]);
    let e = {
        let o = env.loratool(&["pull", &format!("oci://{}/team/nope:v1", reg.addr)]);
        assert!(!o.status.success());
        stderr(&o)
    };
    assert!(e.contains("not found"), "{e}");
    // a digest that is not the manifest's
    let other = format!("sha256:{}", "1".repeat(64));
    let o = env.loratool(&[
        "pull",
        &format!("oci://{}/team/plain@{other}", reg.addr),
        "--save",
        "x/y:w",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    // a registry that answers a digest with other bytes is caught
    reg.faults(
        json!([{"match": "/manifests/", "kind": "other-manifest", "tag": "v1", "times": 1}]),
    );
    let o = env.loratool(&[
        "pull",
        &format!("oci://{}/team/plain@{other}", reg.addr),
        "--save",
        "x/y:w",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("hashes to {digest}")),
        "{}",
        stderr(&o)
    );
    let env2 = {
        let mut e = Env::new("http://127.0.0.1:9");
        e.set("LORATOOL_HTTP_TIMEOUT", "1")
            .set("LORATOOL_HTTP_RETRIES", "0");
        e
    };
    reg.faults(json!([{"origin": "storage", "match": "/data/", "kind": "stall", "seconds": 20, "times": 100}]));
    let t = std::time::Instant::now();
    oci_pull_fails(&reg, &env2, "timed out");
    assert!(t.elapsed().as_secs() < 15);
    assert_store_clean(&env2);
    let _ = &mut env;
}

#[test]
fn hostile_listings_and_headers_are_refused() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    let rev = "/api/models/alice/plain/revision/main";
    hub.faults(json!([{"match": rev, "kind": "huge-json", "bytes": 70 << 20, "times": 1}]));
    pull_fails(&env, "reply larger than");
    let (commit, _) = {
        let v: serde_json::Value =
            serde_json::from_str(&env.loratool_ok(&["pull", "hf://alice/plain", "--json"]))
                .unwrap();
        (v["commit"].as_str().unwrap().to_string(), ())
    };
    let cache_before = files_under(&env.cache());
    let tree = format!("/api/models/alice/plain/tree/{commit}");
    hub.faults(json!([{"match": tree, "kind": "json", "body": [
        {"type": "file", "path": "../../../escape.safetensors", "size": 4, "oid": "0"}], "times": 1}]));
    pull_fails(&env, "not a safe repository path");
    hub.faults(json!([{"match": rev, "kind": "json", "body": {"sha": "../../x"}, "times": 1}]));
    pull_fails(&env, "not a 40-hex commit");
    hub.faults(
        json!([{"match": "/resolve/", "method": "HEAD", "kind": "status", "status": 200,
        "headers": {"X-Repo-Commit": commit, "ETag": "\"../../../../etc/x\""}, "times": 1}]),
    );
    // the blobs are cached already, so only a fresh cache asks for the metadata
    let mut fresh = Env::new(&hub.endpoint);
    fresh.set("HF_TOKEN", WRITE_TOKEN);
    let o = fresh.loratool(&["pull", "hf://alice/plain"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is neither a git SHA-1 nor a sha256"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_under(&env.cache()), cache_before);
    assert!(!env.dir.path().join("escape.safetensors").exists());
}

/// Wait until `cond` holds (or panic after 20 s).
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn spawn_loratool(env: &Env, args: &[&str]) -> std::process::Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_loratool"));
    c.env_remove("HF_TOKEN");
    for (k, v) in &env.vars {
        c.env(k, v);
    }
    c.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_hub_download_leaves_only_a_resumable_incomplete_file() {
    let Some((hub, env)) = hub_with_plain(&[]) else {
        return;
    };
    hub.faults(json!([{"origin": "cdn-body", "match": "/lfs/", "kind": "stall", "seconds": 30, "times": 1}]));
    let mut child = spawn_loratool(&env, &["pull", "hf://alice/plain"]);
    let blobs = env.cache().join("models--alice--plain/blobs");
    let weights = std::fs::read(fixture("peft/plain/adapter_model.safetensors")).unwrap();
    let sha = sha256_hex(&weights);
    let partial = blobs.join(format!("{sha}.incomplete"));
    wait_for("the partial download", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() as usize == weights.len() / 2)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !blobs.join(&sha).exists(),
        "a blob path holds partial content"
    );
    let snaps = env.cache().join("models--alice--plain/snapshots");
    assert!(files_under(&snaps)
        .iter()
        .all(|p| !p.ends_with("adapter_model.safetensors")));
    // the next pull resumes from the partial file and checks the whole
    hub.reset();
    let v: serde_json::Value =
        serde_json::from_str(&env.loratool_ok(&["pull", "hf://alice/plain", "--json"])).unwrap();
    let got =
        std::fs::read(Path::new(v["path"].as_str().unwrap()).join("adapter_model.safetensors"))
            .unwrap();
    assert_eq!(got, weights);
    assert!(!partial.exists());
    let (log, _) = hub.log();
    assert!(
        log.iter()
            .any(|r| r["origin"] == "cdn" && r["range"] == format!("bytes={}-", weights.len() / 2)),
        "{log:?}"
    );
}

#[test]
fn a_killed_oci_pull_leaves_nothing_in_the_store_but_temp_files_gc_removes() {
    let Some((reg, env, _)) = registry_with_plain(None) else {
        return;
    };
    let weights =
        sha256_hex(&std::fs::read(fixture("peft/plain/adapter_model.safetensors")).unwrap());
    let m = format!("/data/sha256:{weights}");
    reg.faults(
        json!([{"origin": "storage", "match": m, "kind": "stall", "seconds": 30, "times": 100}]),
    );
    let mut child = spawn_loratool(
        &env,
        &["pull", &format!("oci://{}/team/plain:v1", reg.addr)],
    );
    let tmp = env.store().join("tmp");
    wait_for("a staged blob", || {
        files_under(&tmp).iter().any(|p| {
            p.to_string_lossy()
                .starts_with(loratool::io::staging::TEMP_PREFIX)
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(files_under(&env.store().join("blobs/sha256")).is_empty());
    let index = std::fs::read_to_string(env.store().join("index.json")).unwrap();
    assert!(!index.contains("team/plain"));
    // gc removes temp files no running writer holds (the lock died with the killed pull;
    // aged too, which changes nothing for a locked temp file)
    for rel in files_under(&tmp) {
        let f = std::fs::File::options()
            .write(true)
            .open(tmp.join(rel))
            .unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
        f.set_modified(old).unwrap();
    }
    env.loratool_ok(&["gc"]);
    assert!(
        files_under(&tmp).is_empty(),
        "gc left {:?}",
        files_under(&tmp)
    );
}

/// A pull into a store on a full filesystem (a 48 KiB tmpfs: room for the store's own files
/// and the config, not for the 76 KB weights) fails with the OS's "No space left on device" and
/// leaves no blob, no temp file and no tag behind.
#[test]
fn an_oci_pull_into_a_full_disk_leaves_a_clean_store() {
    let Some((reg, mut env, _)) = registry_with_plain(None) else {
        return;
    };
    let Some(fs) = robust::SmallFs::mount(
        "an_oci_pull_into_a_full_disk_leaves_a_clean_store",
        48 << 10,
    ) else {
        return;
    };
    let store = fs.path().join("store");
    env.set("LORATOOL_HOME", store.to_str().unwrap());
    let o = env.loratool(&["pull", &format!("oci://{}/team/plain:v1", reg.addr)]);
    assert!(!o.status.success(), "pull succeeded: {}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("No space left on device"), "{e}");
    assert!(
        files_under(&store.join("tmp")).is_empty(),
        "temp files left"
    );
    assert!(
        files_under(&store.join("blobs/sha256")).is_empty(),
        "blobs left"
    );
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(!index.contains("team/plain"), "{index}");
    env.loratool_ok(&["verify"]);
}
