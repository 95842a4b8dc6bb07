//! The OCI client against a real registry (Debian's `docker-registry`, distribution 2.8, on
//! 127.0.0.1), with skopeo as the independent client: what loratool pushes skopeo copies with
//! the same digests, and what skopeo pushes from the store's layout loratool pulls.

mod remote_support;

use remote_support::*;
use std::path::Path;
use std::process::Command;

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo").args(args).output().unwrap();
    assert!(o.status.success(), "skopeo {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn digest_of(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string()
}

#[test]
fn push_then_skopeo_copy_keeps_digests_and_pull_round_trips() {
    if !have_registry_tools() {
        return;
    }
    let reg = Registry::start(None);
    let env = Env::new("http://127.0.0.1:9");
    let src = fixture("peft/plain");
    let digest =
        digest_of(&env.loratool_ok(&["add", src.to_str().unwrap(), "--name", "acme/plain:v1"]));
    let dest = format!("oci://{}/team/plain:v1", reg.addr);
    // small chunks: the blob goes up in several PATCH requests
    let out = env.loratool_ok(&[
        "push",
        "acme/plain:v1",
        &dest,
        "--chunk-size",
        "20000",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["blobs_uploaded"], 3);
    // skopeo sees the same manifest bytes and copies every blob, checking digests
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/team/plain:v1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(format!("sha256:{}", sha256_hex(&raw.stdout)), digest);
    let layout = tempfile::tempdir().unwrap();
    let target = format!("oci:{}:copy", layout.path().display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/team/plain:v1", reg.addr),
        &target,
    ]);
    let weights = sha256_hex(&std::fs::read(src.join("adapter_model.safetensors")).unwrap());
    assert!(layout.path().join("blobs/sha256").join(&weights).is_file());
    assert!(layout
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file());
    // pushing again sends no blob
    let again: serde_json::Value =
        serde_json::from_str(&env.loratool_ok(&["push", "acme/plain:v1", &dest, "--json"]))
            .unwrap();
    assert_eq!(again["blobs_uploaded"], 0);
    assert_eq!(again["blobs_skipped"], 3);
    // a fresh store pulls it back: same digest, files identical, provenance recorded
    let env2 = Env::new("http://127.0.0.1:9");
    let pulled: serde_json::Value =
        serde_json::from_str(&env2.loratool_ok(&["pull", &dest, "--json"])).unwrap();
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["saved_as"], "team/plain:v1");
    env2.loratool_ok(&["verify"]);
    let out = tempfile::tempdir().unwrap();
    env2.loratool_ok(&[
        "export",
        "team/plain:v1",
        "-o",
        out.path().to_str().unwrap(),
    ]);
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(out.path().join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap()
        );
    }
    let index = std::fs::read_to_string(env2.store().join("index.json")).unwrap();
    assert!(
        index.contains(&format!("oci://{}/team/plain@{digest}", reg.addr)),
        "{index}"
    );
    // any command reads an oci:// reference
    let info = env2.loratool_ok(&["info", &dest]);
    assert!(info.contains("peft"), "{info}");
}

#[test]
fn loratool_pulls_what_skopeo_pushed_from_the_store_layout() {
    if !have_registry_tools() {
        return;
    }
    let reg = Registry::start(None);
    let env = Env::new("http://127.0.0.1:9");
    let src = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let digest = digest_of(&env.loratool_ok(&["add", src.to_str().unwrap(), "--name", "style:v1"]));
    let from = format!("oci:{}:style:v1", env.store().display());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &from,
        &format!("docker://{}/lib/style:v1", reg.addr),
    ]);
    let env2 = Env::new("http://127.0.0.1:9");
    let out = env2.loratool_ok(&[
        "pull",
        &format!("oci://{}/lib/style:v1", reg.addr),
        "--save",
        "mine/style:s",
    ]);
    assert!(out.contains(&digest), "{out}");
    let dir = tempfile::tempdir().unwrap();
    env2.loratool_ok(&["export", "mine/style:s", "-o", dir.path().to_str().unwrap()]);
    let name = src.file_name().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(name)).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // by digest too
    let by_digest = format!("oci://{}/lib/style@{digest}", reg.addr);
    let out = env2.loratool_ok(&["pull", &by_digest, "--save", "mine/style:d"]);
    assert!(out.contains(&digest));
}

#[test]
fn basic_auth_from_the_docker_config_and_errors_without_it() {
    if !have_registry_tools() {
        return;
    }
    let (user, pass) = ("tester", "pw-not-in-output-93b1");
    let reg = Registry::start(Some((user, pass)));
    let env = Env::new("http://127.0.0.1:9");
    env.loratool_ok(&[
        "add",
        fixture("peft/plain").to_str().unwrap(),
        "--name",
        "acme/plain:v1",
    ]);
    let dest = format!("oci://{}/team/auth:v1", reg.addr);
    let o = env.loratool(&["push", "acme/plain:v1", &dest]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("401") && e.contains("docker login"), "{e}");
    // wrong password: refused, and neither password is echoed
    let docker = env.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let write_cfg = |p: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"));
        std::fs::write(
            docker.join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
        )
        .unwrap();
    };
    write_cfg("wrong-password-77");
    let o = env.loratool(&["push", "acme/plain:v1", &dest]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("401"), "{e}");
    assert!(!e.contains("wrong-password-77"));
    write_cfg(pass);
    let out = env.loratool_ok(&["push", "acme/plain:v1", &dest]);
    assert!(!out.contains(pass));
    // skopeo with the same credentials sees it; loratool pulls it with credentials from flags
    skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("{user}:{pass}"),
        &format!("docker://{}/team/auth:v1", reg.addr),
    ]);
    let env2 = Env::new("http://127.0.0.1:9");
    let mut c = Command::new(env!("CARGO_BIN_EXE_loratool"));
    for (k, v) in &env2.vars {
        c.env(k, v);
    }
    c.args(["pull", &dest, "--username", user, "--password-stdin"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pass}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for dir in [env.dir.path().join("store"), env2.store()] {
        assert_eq!(any_file_contains(&dir, pass), None);
    }
}

#[test]
fn a_path_is_pushed_through_a_temporary_store() {
    if !have_registry_tools() {
        return;
    }
    let reg = Registry::start(None);
    let env = Env::new("http://127.0.0.1:9");
    let dest = format!("oci://{}/x/dora:v1", reg.addr);
    env.loratool_ok(&["push", fixture("peft/dora").to_str().unwrap(), &dest]);
    assert!(
        !Path::new(&env.store()).join("index.json").exists(),
        "the user's store was not touched"
    );
    let out = env.loratool_ok(&["pull", &dest]);
    assert!(out.contains("x/dora:v1"), "{out}");
}

#[test]
fn a_server_that_is_not_a_registry_is_named_as_such() {
    if !require(
        "python3",
        Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "python3",
    ) {
        return;
    }
    let www = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut plain = Command::new("python3")
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
    let env = Env::new("http://127.0.0.1:9");
    let o = env.loratool(&["pull", &format!("oci://127.0.0.1:{port}/a/b:c")]);
    env.loratool_ok(&[
        "add",
        fixture("peft/plain").to_str().unwrap(),
        "--name",
        "a/b:c",
    ]);
    let p = env.loratool(&["push", "a/b:c", &format!("oci://127.0.0.1:{port}/a/b:c")]);
    let _ = plain.kill();
    let _ = plain.wait();
    for o in [o, p] {
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("is this an OCI registry?"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn credential_helpers_from_the_docker_config_are_asked_like_docker_asks_them() {
    if !have_registry_tools() {
        return;
    }
    let (user, pass) = ("helped", "pw-from-helper-5d2e");
    let reg = Registry::start(Some((user, pass)));
    let mut env = Env::new("http://127.0.0.1:9");
    env.loratool_ok(&[
        "add",
        fixture("peft/plain").to_str().unwrap(),
        "--name",
        "acme/plain:v1",
    ]);
    // helpers speaking docker-credential-helpers' protocol: `get`, server on stdin, JSON out
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = env.dir.path().join("asked");
    let helper = |name: &str, body: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(
            &p,
            format!("#!/bin/sh\n[ \"$1\" = get ] || exit 3\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    helper(
        "lt-good",
        &format!(
            "cat > {}\necho '{{\"ServerURL\":\"x\",\"Username\":\"{user}\",\"Secret\":\"{pass}\"}}'",
            asked.display()
        ),
    );
    helper(
        "lt-empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.set("PATH", &path);
    let docker = env.dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let cfg = |json: String| std::fs::write(docker.join("config.json"), json).unwrap();
    let dest = format!("oci://{}/team/helped:v1", reg.addr);
    // credsStore that has nothing for this registry: no credentials, the 401 is reported
    cfg(r#"{"auths":{},"credsStore":"lt-empty"}"#.into());
    let o = env.loratool(&["push", "acme/plain:v1", &dest]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    // credHelpers for this registry wins over credsStore
    cfg(format!(
        r#"{{"auths":{{"{0}":{{}}}},"credsStore":"lt-empty","credHelpers":{{"{0}":"lt-good"}}}}"#,
        reg.addr
    ));
    let out = env.loratool_ok(&["push", "acme/plain:v1", &dest, "--json"]);
    assert!(!out.contains(pass));
    assert_eq!(std::fs::read_to_string(&asked).unwrap().trim(), reg.addr);
    // a helper name that is a path is refused without running anything
    cfg(r#"{"credsStore":"../../bin/sh"}"#.into());
    let o = env.loratool(&["push", "acme/plain:v1", &dest]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a plain name"), "{}", stderr(&o));
    assert_eq!(any_file_contains(&env.store(), pass), None);
}
