//! Helpers for the remote tests: the loopback Hub server (tests/hub_server/server.py), the real
//! huggingface_hub client in Python, a Debian `docker-registry` on 127.0.0.1, and loratool
//! runs with a private store, HF cache and timeouts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether a tool the test needs is there; under CI its absence is a failure (.ci/run
/// installs it), elsewhere the test is skipped with a message.
pub fn require(what: &str, ok: bool, install: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing; .ci/run installs it ({install})");
    }
    eprintln!("skipping: {what} is missing ({install})");
    false
}

pub fn have_huggingface_hub() -> bool {
    require(
        "python3 with huggingface_hub",
        Command::new("python3")
            .args(["-c", "import huggingface_hub"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "pip install huggingface_hub==2.4.0",
    )
}

pub fn have_python() -> bool {
    require(
        "python3",
        Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "python3",
    )
}

/// The loopback Hub: main origin and CDN origin, killed on drop.
pub struct HubServer {
    pub endpoint: String,
    pub cdn: String,
    child: Child,
    _data: tempfile::TempDir,
}

pub const WRITE_TOKEN: &str = "hf_test_write_token_7d1c";
pub const READ_TOKEN: &str = "hf_test_read_token_55ab";

impl HubServer {
    pub fn start(extra: &[&str]) -> HubServer {
        let data = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub_server/server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--data", data.path().to_str().unwrap()])
            .args(["--token", WRITE_TOKEN, "--read-token", READ_TOKEN])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/hub_server/server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(
            line.strip_prefix("READY ")
                .unwrap_or_else(|| panic!("server said {line:?}")),
        )
        .unwrap();
        HubServer {
            endpoint: v["endpoint"].as_str().unwrap().to_string(),
            cdn: v["cdn"].as_str().unwrap().to_string(),
            child,
            _data: data,
        }
    }

    fn control(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let url = format!("{}{path}", self.endpoint);
        let mut r = if method == "GET" {
            agent.get(&url).call().unwrap()
        } else {
            agent.post(&url).send(body.as_bytes()).unwrap()
        };
        serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap()
    }

    /// Inject faults: a JSON list of `{origin, method, match, kind, status, times, ...}`.
    pub fn faults(&self, faults: serde_json::Value) {
        self.control("POST", "/_control/faults", &faults.to_string());
    }

    pub fn reset(&self) {
        self.control("POST", "/_control/reset", "");
    }

    /// The summaries of every commit the server took.
    pub fn commit_summaries(&self) -> Vec<String> {
        let v = self.control("GET", "/_control/log", "");
        v["commits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["summary"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(log, cdn_auth)`: every request, and the CDN requests that carried Authorization.
    pub fn log(&self) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        let v = self.control("GET", "/_control/log", "");
        (
            v["log"].as_array().cloned().unwrap_or_default(),
            v["cdn_auth"].as_array().cloned().unwrap_or_default(),
        )
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private environment for loratool and Python: store, HF cache, no retries to wait for.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new(endpoint: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let vars = vec![
            ("HF_ENDPOINT".into(), endpoint.to_string()),
            (
                "HF_HOME".into(),
                dir.path().join("hf").display().to_string(),
            ),
            (
                "LORATOOL_HOME".into(),
                dir.path().join("store").display().to_string(),
            ),
            ("HF_HUB_DISABLE_XET".into(), "1".into()),
            ("HF_HUB_DISABLE_TELEMETRY".into(), "1".into()),
            ("LORATOOL_HTTP_BACKOFF_MS".into(), "50".into()),
            ("LORATOOL_HTTP_TIMEOUT".into(), "20".into()),
            (
                "DOCKER_CONFIG".into(),
                dir.path().join("docker").display().to_string(),
            ),
        ];
        Env { dir, vars }
    }

    pub fn set(&mut self, k: &str, v: &str) -> &mut Env {
        self.vars.retain(|(n, _)| n != k);
        self.vars.push((k.into(), v.into()));
        self
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("hf/hub")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn apply(&self, c: &mut Command) {
        for k in [
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "LORATOOL_REGISTRY_USERNAME",
            "LORATOOL_REGISTRY_PASSWORD",
        ] {
            c.env_remove(k);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
    }

    pub fn loratool(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loratool"));
        c.args(args).stdin(Stdio::null());
        self.apply(&mut c);
        c.output().unwrap()
    }

    pub fn loratool_ok(&self, args: &[&str]) -> String {
        let o = self.loratool(args);
        assert!(
            o.status.success(),
            "loratool {args:?} failed:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Run a Python script with huggingface_hub in this environment.
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        let mut c = Command::new("python3");
        c.arg("-c").arg(script).args(args).stdin(Stdio::null());
        self.apply(&mut c);
        c.output().unwrap()
    }

    pub fn python_ok(&self, script: &str, args: &[&str]) -> String {
        let o = self.python(script, args);
        assert!(
            o.status.success(),
            "python failed:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

/// Every file under `dir` (recursively), relative paths, symlinks followed for content.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Whether any file under `dir` contains `needle` (tokens must never be written anywhere).
pub fn any_file_contains(dir: &Path, needle: &str) -> Option<PathBuf> {
    for rel in files_under(dir) {
        let p = dir.join(&rel);
        if let Ok(mut f) = std::fs::File::open(&p) {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok()
                && buf.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                return Some(p);
            }
        }
    }
    None
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, temp storage, killed on drop.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

pub fn have_registry_tools() -> bool {
    let ok = |c: &str, a: &str| {
        Command::new(c)
            .arg(a)
            .output()
            .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
    };
    require(
        "docker-registry, skopeo and htpasswd",
        ok("docker-registry", "--version") && ok("skopeo", "--version") && ok("htpasswd", "-h"),
        "apt-get install -y docker-registry skopeo apache2-utils",
    )
}

impl Registry {
    /// Start it; with `auth`, htpasswd (bcrypt) basic auth for that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            );
            if let Some((user, pass)) = auth {
                let htpasswd = dir.path().join("htpasswd");
                let o = Command::new("htpasswd")
                    .args(["-Bbc", htpasswd.to_str().unwrap(), user, pass])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", stderr(&o));
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: loratool-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut child = Command::new("docker-registry")
                .args(["serve", cfg_path.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    let mut e = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut e).ok();
                    last_err = e;
                    break;
                }
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return Registry {
                        addr,
                        child,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start: {last_err}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tests/hub_server/fake_registry.py: a read-only registry over a store's OCI layout, with a
/// Bearer challenge, blob redirects to a storage origin, and injected faults.
pub struct FakeRegistry {
    pub addr: String,
    child: Child,
}

impl FakeRegistry {
    pub fn start(layout: &Path, creds: Option<(&str, &str)>) -> FakeRegistry {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub_server/fake_registry.py");
        let mut c = Command::new("python3");
        c.arg(&script).args(["--layout", layout.to_str().unwrap()]);
        if let Some((u, p)) = creds {
            c.args(["--user", u, "--password", p]);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix("READY ").unwrap()).unwrap();
        FakeRegistry {
            addr: v["addr"].as_str().unwrap().to_string(),
            child,
        }
    }

    pub fn faults(&self, faults: serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        agent
            .post(format!("http://{}/_control/faults", self.addr))
            .send(faults.to_string().as_bytes())
            .unwrap();
    }

    pub fn log(&self) -> serde_json::Value {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let mut r = agent
            .get(format!("http://{}/_control/log", self.addr))
            .call()
            .unwrap();
        serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
