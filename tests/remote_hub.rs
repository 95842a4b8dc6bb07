//! The Hub client against the loopback Hub server, with the real huggingface_hub (Xet disabled)
//! on the other side of every exchange: what it uploads loratool pulls byte-identical, what
//! loratool pushes it downloads byte-identical, and both share one cache.

mod remote_support;

use remote_support::*;
use std::path::Path;

const UPLOAD: &str = r#"
import sys
from huggingface_hub import HfApi
api = HfApi(token=sys.argv[1])
api.create_repo(sys.argv[2], exist_ok=True)
info = api.upload_folder(repo_id=sys.argv[2], folder_path=sys.argv[3],
                         path_in_repo=(sys.argv[4] if len(sys.argv) > 4 else None))
print(info.oid)
"#;

const SNAPSHOT: &str = r#"
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], revision=(sys.argv[2] if len(sys.argv) > 2 else None)))
"#;

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn upload_folder_is_pulled_byte_identical_into_the_hf_cache_layout() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    let src = fixture("peft/plain");
    let commit = env.python_ok(UPLOAD, &[WRITE_TOKEN, "alice/plain", src.to_str().unwrap()]);
    let commit = commit.trim();
    env.set("HF_TOKEN", WRITE_TOKEN);
    let out = env.loratool_ok(&["pull", "hf://alice/plain", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["commit"], commit);
    let snap = env
        .cache()
        .join(format!("models--alice--plain/snapshots/{commit}"));
    assert_eq!(Path::new(v["path"].as_str().unwrap()), snap);
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(read(&snap.join(f)), read(&src.join(f)), "{f}");
        // relative symlink into blobs/, named by the sha256 (LFS) or git blob SHA-1 (regular)
        let target = std::fs::read_link(snap.join(f)).unwrap();
        let bytes = read(&src.join(f));
        let expected = if f.ends_with(".safetensors") {
            sha256_hex(&bytes)
        } else {
            use sha1::Digest as _;
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {}\0", bytes.len()).as_bytes());
            h.update(&bytes);
            hex::encode(h.finalize())
        };
        assert_eq!(target, Path::new("../../blobs").join(&expected));
    }
    assert_eq!(
        std::fs::read_to_string(env.cache().join("models--alice--plain/refs/main")).unwrap(),
        commit
    );
    // the Hub sends LFS files through its CDN: the token went to the endpoint, never there
    let (log, cdn_auth) = hub.log();
    assert!(cdn_auth.is_empty(), "token sent to the CDN: {cdn_auth:?}");
    assert!(log
        .iter()
        .any(|r| r["origin"] == "cdn" && r["method"] == "GET"));
    assert!(log.iter().any(|r| r["origin"] == "main"
        && r["auth"] == true
        && r["path"].as_str().unwrap().contains("/resolve/")));
    // nothing is fetched twice
    hub.reset();
    env.loratool_ok(&["pull", "hf://alice/plain"]);
    let (log, _) = hub.log();
    assert!(
        !log.iter()
            .any(|r| r["method"] == "GET" && r["origin"] == "cdn"),
        "{log:?}"
    );
}

#[test]
fn what_loratool_pushes_snapshot_download_gets_byte_identical_with_a_card() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    env.set("HF_TOKEN", WRITE_TOKEN);
    let src = fixture("peft/plain");
    let added = env.loratool_ok(&["add", src.to_str().unwrap(), "--name", "acme/style:v2"]);
    let digest = added.split_whitespace().last().unwrap().to_string();
    let out = env.loratool_ok(&["push", "acme/style:v2", "hf://acme/style-lora", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["card_written"], true);
    let snap = env.python_ok(SNAPSHOT, &["acme/style-lora"]);
    let snap = Path::new(snap.trim());
    assert!(snap.ends_with(report["commit_oid"].as_str().unwrap()));
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(read(&snap.join(f)), read(&src.join(f)), "{f}");
    }
    // the card parses with huggingface_hub's own ModelCard (PyYAML underneath)
    let card = env.python_ok(
        r#"
import json, sys
from huggingface_hub import ModelCard
d = ModelCard.load(sys.argv[1]).data.to_dict()
print(json.dumps(d))
"#,
        &[snap.join("README.md").to_str().unwrap()],
    );
    let card: serde_json::Value = serde_json::from_str(card.trim()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&read(&src.join("adapter_config.json"))).unwrap();
    assert_eq!(card["library_name"], "peft");
    assert_eq!(card["base_model"], config["base_model_name_or_path"]);
    assert!(card["tags"].as_array().unwrap().iter().any(|t| t == "lora"));
    // the commit message names the store reference and the manifest digest
    let summaries = hub.commit_summaries();
    assert!(
        summaries
            .iter()
            .any(|m| m.contains("acme/style:v2") && m.contains(&digest)),
        "{summaries:?}"
    );
    let readme = String::from_utf8(read(&snap.join("README.md"))).unwrap();
    assert!(
        readme.contains(&digest),
        "the card names the manifest digest"
    );
    // PEFT's LoraConfig accepts every key of the pushed config (checked against PEFT's source)
    check_peft_config(&env, &snap.join("adapter_config.json"));
    // pushing again sends nothing
    let again = env.loratool_ok(&["push", "acme/style:v2", "hf://acme/style-lora", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["commit_url"], serde_json::Value::Null);
    assert_eq!(again["uploaded"].as_array().unwrap().len(), 0);
}

/// Load the pushed adapter_config.json with PEFT's LoraConfig when PEFT imports (it needs
/// torch); otherwise check its keys against the dataclass fields in PEFT's installed source.
fn check_peft_config(env: &Env, path: &Path) {
    let o = env.python(
        r#"
import ast, importlib.util, json, os, sys
cfg = json.load(open(sys.argv[1]))
try:
    from peft import LoraConfig
    c = LoraConfig.from_pretrained(os.path.dirname(sys.argv[1]))
    print("loaded", c.r)
    sys.exit(0)
except ImportError:
    pass
spec = importlib.util.find_spec("peft")
if spec is None:
    print("NO_PEFT")
    sys.exit(0)
root = os.path.dirname(spec.origin)
fields = set()
for rel in ["config.py", "tuners/lora/config.py"]:
    tree = ast.parse(open(os.path.join(root, rel)).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in ("PeftConfigMixin", "PeftConfig", "LoraConfig"):
            for st in node.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                    fields.add(st.target.id)
unknown = sorted(k for k in cfg if k not in fields)
assert "r" in fields and "lora_alpha" in fields, fields
assert not unknown, unknown
assert cfg["peft_type"] == "LORA"
print("fields ok", len(fields))
"#,
        &[path.to_str().unwrap()],
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    if out.contains("NO_PEFT") {
        require(
            "peft (source, for its LoraConfig fields)",
            false,
            "pip install --no-deps peft==0.21.2",
        );
    }
}

#[test]
fn the_cache_is_shared_both_ways() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    let src = fixture("peft/plain");
    env.python_ok(
        UPLOAD,
        &[WRITE_TOKEN, "alice/shared", src.to_str().unwrap()],
    );
    env.python_ok(
        UPLOAD,
        &[
            WRITE_TOKEN,
            "alice/other",
            fixture("peft/dora").to_str().unwrap(),
        ],
    );
    // huggingface_hub downloads; loratool reads it offline
    env.python_ok(SNAPSHOT, &["alice/shared"]);
    env.set("HF_HUB_OFFLINE", "1");
    let out = env.loratool_ok(&["info", "hf://alice/shared"]);
    assert!(out.contains("peft"), "{out}");
    let (log, _) = hub.log();
    let before = log.len();
    env.loratool_ok(&["pull", "hf://alice/shared"]);
    assert_eq!(
        hub.log().0.len(),
        before,
        "offline pull touched the network"
    );
    // loratool downloads; huggingface_hub reads it offline
    let env2 = Env::new(&hub.endpoint);
    env2.loratool_ok(&["pull", "hf://alice/other"]);
    let mut env2 = env2;
    env2.set("HF_HUB_OFFLINE", "1");
    let p = env2.python_ok(
        r#"
import sys
from huggingface_hub import hf_hub_download
print(hf_hub_download("alice/other", "adapter_model.safetensors"))
"#,
        &[],
    );
    assert_eq!(
        read(Path::new(p.trim())),
        read(&fixture("peft/dora/adapter_model.safetensors"))
    );
}

#[test]
fn several_adapters_in_one_repo_need_a_pick() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&["--page-size", "2"]);
    let mut env = Env::new(&hub.endpoint);
    let tree = tempfile::tempdir().unwrap();
    for (sub, fx) in [("one", "peft/plain"), ("two", "peft/dora")] {
        let d = tree.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixture(fx).join(f), d.join(f)).unwrap();
        }
    }
    std::fs::create_dir_all(tree.path().join("kohya")).unwrap();
    std::fs::copy(
        fixture("kohya/sd15_lora_r8_a8_attn.safetensors"),
        tree.path().join("kohya/style.safetensors"),
    )
    .unwrap();
    env.python_ok(
        UPLOAD,
        &[WRITE_TOKEN, "team/many", tree.path().to_str().unwrap()],
    );
    env.set("HF_TOKEN", READ_TOKEN);
    let o = env.loratool(&["pull", "hf://team/many"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    for c in [
        "hf://team/many/one",
        "hf://team/many/two",
        "--file kohya/style.safetensors",
    ] {
        assert!(err.contains(c), "{err}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&env.loratool_ok(&["pull", "hf://team/many/two", "--json"])).unwrap();
    assert!(v["path"].as_str().unwrap().ends_with("/two"));
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        read(Path::new(files[1].as_str().unwrap())),
        read(&fixture("peft/dora/adapter_model.safetensors"))
    );
    let v: serde_json::Value = serde_json::from_str(&env.loratool_ok(&[
        "pull",
        "hf://team/many",
        "--file",
        "kohya/style.safetensors",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        read(Path::new(v["path"].as_str().unwrap())),
        read(&fixture("kohya/sd15_lora_r8_a8_attn.safetensors"))
    );
    // and any command reads a subfolder reference
    let info = env.loratool_ok(&["info", "hf://team/many/one"]);
    assert!(info.contains("peft"), "{info}");
}

#[test]
fn push_converts_into_a_branch_and_subfolder_and_pull_saves_with_lineage() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    env.set("HF_TOKEN", WRITE_TOKEN);
    let src = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    env.loratool_ok(&["add", src.to_str().unwrap(), "--name", "acme/sd:v1"]);
    env.loratool_ok(&[
        "push",
        "acme/sd:v1",
        "hf://acme/sd@dev/diffusers",
        "--to",
        "diffusers",
        "--private",
    ]);
    let snap = env.python_ok(SNAPSHOT, &["acme/sd", "dev"]);
    let file = Path::new(snap.trim()).join("diffusers/pytorch_lora_weights.safetensors");
    assert!(file.is_file());
    // the converted file holds the same ΔW as the source (loratool's reader on both; the
    // conversion itself is covered by the convert tests)
    let a = loratool::adapter::codec::read_adapter(&src, None, &Default::default()).unwrap();
    let b = loratool::adapter::codec::read_adapter(&file, None, &Default::default()).unwrap();
    assert_eq!(a.layers.len(), b.layers.len());
    // main has no such file: the push went to the branch
    let o = env.python(SNAPSHOT, &["acme/sd"]);
    let main_snap = stdout(&o);
    assert!(!Path::new(main_snap.trim()).join("diffusers").exists());
    // pull --save stores it with the pinned commit as lineage
    let v: serde_json::Value = serde_json::from_str(&env.loratool_ok(&[
        "pull",
        "hf://acme/sd@dev/diffusers",
        "--save",
        "acme/sd:from-hub",
        "--json",
    ]))
    .unwrap();
    let show = env.loratool_ok(&["show", "acme/sd:from-hub", "--json"]);
    assert!(show.contains(v["pinned"].as_str().unwrap()), "{show}");
    // the private repo is not readable without a token
    env.set("HF_TOKEN", "");
    let o = env.loratool(&["pull", "hf://acme/sd@dev/diffusers"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HF_TOKEN"), "{}", stderr(&o));
}

#[test]
fn multipart_lfs_uploads_work_both_ways() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&["--multipart-threshold", "20000", "--chunk-size", "16384"]);
    let mut env = Env::new(&hub.endpoint);
    env.set("HF_TOKEN", WRITE_TOKEN);
    let src = fixture("peft/plain");
    env.loratool_ok(&["push", src.to_str().unwrap(), "hf://acme/mp"]);
    let (log, cdn_auth) = hub.log();
    assert!(cdn_auth.is_empty(), "{cdn_auth:?}");
    let parts = log
        .iter()
        .filter(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().contains("/part/"))
        .count();
    let size = std::fs::metadata(src.join("adapter_model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(parts as u64, size.div_ceil(16384));
    let snap = env.python_ok(SNAPSHOT, &["acme/mp"]);
    assert_eq!(
        read(&Path::new(snap.trim()).join("adapter_model.safetensors")),
        read(&src.join("adapter_model.safetensors"))
    );
    // the real client uploads through the same multipart path, and loratool reads it
    env.python_ok(
        UPLOAD,
        &[
            WRITE_TOKEN,
            "acme/mp2",
            fixture("peft/dora").to_str().unwrap(),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.loratool_ok(&["pull", "hf://acme/mp2", "--json"])).unwrap();
    assert_eq!(
        read(&Path::new(v["path"].as_str().unwrap()).join("adapter_model.safetensors")),
        read(&fixture("peft/dora/adapter_model.safetensors"))
    );
}

#[test]
fn errors_name_the_problem_and_the_fix() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    env.python_ok(
        UPLOAD,
        &[
            WRITE_TOKEN,
            "alice/plain",
            fixture("peft/plain").to_str().unwrap(),
        ],
    );
    let err = |env: &Env, args: &[&str]| {
        let o = env.loratool(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        stderr(&o)
    };
    let e = err(&env, &["pull", "hf://alice/nope"]);
    assert!(e.contains("repository 'alice/nope' not found"), "{e}");
    let e = err(&env, &["pull", "hf://alice/plain@v9"]);
    assert!(e.contains("no revision 'v9'"), "{e}");
    let e = err(
        &env,
        &["pull", "hf://alice/plain", "--file", "nope.safetensors"],
    );
    assert!(e.contains("'nope.safetensors' not found"), "{e}");
    let e = err(
        &env,
        &[
            "push",
            fixture("peft/plain").to_str().unwrap(),
            "hf://alice/new",
        ],
    );
    assert!(e.contains("401") && e.contains("HF_TOKEN"), "{e}");
    env.set("HF_TOKEN", READ_TOKEN);
    let e = err(
        &env,
        &[
            "push",
            fixture("peft/plain").to_str().unwrap(),
            "hf://alice/plain",
        ],
    );
    assert!(e.contains("403") && e.contains("write access"), "{e}");
    assert!(!e.contains(READ_TOKEN));
    // a server that is not a Hub
    let www = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut plain = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(www.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    env.set("HF_ENDPOINT", &format!("http://127.0.0.1:{port}"));
    let e = err(&env, &["pull", "hf://alice/plain"]);
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(e.contains("is HF_ENDPOINT a Hugging Face Hub?"), "{e}");
}

#[test]
fn a_gguf_adapter_is_pushed_as_is() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let mut env = Env::new(&hub.endpoint);
    env.set("HF_TOKEN", WRITE_TOKEN);
    // a llama GGUF adapter cannot be read without its base (q/k permutation), but it can be sent
    let src = fixture("gguf/plain-f16.gguf");
    env.loratool_ok(&["push", src.to_str().unwrap(), "hf://acme/gguf"]);
    let snap = env.python_ok(SNAPSHOT, &["acme/gguf"]);
    let snap = Path::new(snap.trim());
    assert_eq!(read(&snap.join("plain-f16.gguf")), read(&src));
    let card = String::from_utf8(read(&snap.join("README.md"))).unwrap();
    assert!(
        card.contains("- \"gguf\"") && !card.contains("library_name"),
        "{card}"
    );
}

#[test]
fn remote_references_merge_exactly_and_the_saved_lineage_pins_their_commits() {
    if !have_huggingface_hub() {
        return;
    }
    let hub = HubServer::start(&[]);
    let env = Env::new(&hub.endpoint);
    let (a, b) = (fixture("peft/plain"), fixture("peft/plain2"));
    let oid_a = env.python_ok(UPLOAD, &[WRITE_TOKEN, "alice/a", a.to_str().unwrap()]);
    let oid_b = env.python_ok(UPLOAD, &[WRITE_TOKEN, "alice/b", b.to_str().unwrap()]);
    let out = env.store().with_file_name("merged");
    env.loratool_ok(&[
        "merge",
        "hf://alice/a",
        "hf://alice/b",
        "--weights",
        "0.7,0.3",
        "-o",
        out.to_str().unwrap(),
        "--save",
        "acme/merged:v1",
    ]);
    // the merged ΔW equals the dense weighted sum of the local originals
    let read = |p: &Path| {
        loratool::adapter::codec::read_adapter(p, None, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (la, lb, merged) = (read(&a), read(&b), read(&out));
    assert_eq!(
        merged.layers.len(),
        la.layers.len(),
        "plain2 targets a subset of plain"
    );
    for (name, layer) in &merged.layers {
        let mut terms = vec![(&la.layers[name], 0.7)];
        terms.extend(lb.layers.get(name).map(|l| (l, 0.3)));
        let err = loratool::testing::layer_rel_diff(layer, &terms);
        assert!(err < 1e-5, "{name}: rel. error {err}");
    }
    // the lineage names both remote inputs at the commits they resolved to
    let show = env.loratool_ok(&["show", "acme/merged:v1", "--json"]);
    for (repo, oid) in [("alice/a", &oid_a), ("alice/b", &oid_b)] {
        assert!(show.contains(repo), "{repo} missing from lineage: {show}");
        assert!(
            show.contains(oid.trim()),
            "{oid} not pinned in lineage: {show}"
        );
    }
}
