//! Registry credentials and the `WWW-Authenticate` challenge: where a username and password
//! come from (flags/environment, then `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`:
//! `credHelpers`, `auths`, `credsStore`, in docker's order), and how a challenge turns into an `Authorization` header (Basic, or a Bearer token
//! from the challenge's realm).

use super::super::error::{RemoteError, Result};
use super::super::http::{self, Http, Request, Secret};
use base64::Engine as _;
use serde::Deserialize;
use std::path::PathBuf;

/// A username and password (or identity token) for one registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn basic(&self) -> Secret {
        Secret::basic(&self.username, self.password.expose())
    }
}

/// `LORATOOL_REGISTRY_USERNAME` / `LORATOOL_REGISTRY_PASSWORD` when both are set.
pub fn from_env() -> Option<Credentials> {
    let u = std::env::var("LORATOOL_REGISTRY_USERNAME")
        .ok()
        .filter(|s| !s.is_empty())?;
    let p = std::env::var("LORATOOL_REGISTRY_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())?;
    Some(Credentials {
        username: u,
        password: Secret::new(p),
    })
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` (`host[:port]`) from the docker config: the registry's
/// `credHelpers` entry, else its `auths` entry, else the `credsStore` helper, as docker does.
pub fn from_docker_config(registry: &str) -> Result<Option<Credentials>> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = crate::registry::layout::read_bounded(&path, 4 << 20)
        .map_err(|e| RemoteError::Invalid(e.to_string()))?;
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        auth: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
        #[serde(default)]
        creds_store: Option<String>,
        #[serde(default)]
        cred_helpers: std::collections::BTreeMap<String, String>,
    }
    let config: Config = serde_json::from_slice(&bytes).map_err(|e| {
        RemoteError::Invalid(format!("{}: not a docker config file: {e}", path.display()))
    })?;
    // keys may be `host`, `host:port`, or URLs such as `https://host/v1/`
    let key_host = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next().unwrap_or(k).to_string()
    };
    if let Some(helper) = config.cred_helpers.get(registry) {
        return from_helper(helper, registry, &path);
    }
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| key_host(k) == registry)
        .map(|(_, e)| e);
    let stored = entry.is_some_and(|e| {
        e.auth.as_deref().is_some_and(|a| !a.is_empty())
            || (e.username.is_some() && e.password.is_some())
    });
    let Some(entry) = entry.filter(|_| stored) else {
        return match config.creds_store.as_deref().filter(|s| !s.is_empty()) {
            Some(helper) => from_helper(helper, registry, &path),
            None => Ok(None),
        };
    };
    if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                RemoteError::Invalid(format!(
                    "{}: the 'auth' of {registry} is not base64 of user:password",
                    path.display()
                ))
            })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            RemoteError::Invalid(format!(
                "{}: the 'auth' of {registry} is not user:password",
                path.display()
            ))
        })?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: Secret::new(p.to_string()),
        }));
    }
    Ok(match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        }),
        _ => None,
    })
}

/// Runs `docker-credential-<helper> get` with the registry on stdin, as docker does; "not
/// found" is no credentials, any other failure an error naming the helper.
fn from_helper(
    helper: &str,
    registry: &str,
    config: &std::path::Path,
) -> Result<Option<Credentials>> {
    use std::io::{Seek as _, Write as _};
    use std::process::{Command, Stdio};
    // the name comes from a file: never let it name a path
    if helper.is_empty()
        || !helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || helper.starts_with('.')
    {
        return Err(RemoteError::Invalid(format!(
            "{}: credential helper name {helper:?} is not a plain name",
            config.display()
        )));
    }
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| {
        RemoteError::Invalid(format!(
            "credential helper {program} (from {}) for {registry}: {why}; pass --username and \
             --password-stdin instead",
            config.display()
        ))
    };
    // the server name goes in from a file, not a pipe: a helper that exits without reading
    // must not raise SIGPIPE in loratool (the CLI keeps SIGPIPE's default action)
    let mut input = tempfile::tempfile().map_err(|e| failed(format!("no temp file: {e}")))?;
    input
        .write_all(registry.as_bytes())
        .and_then(|_| input.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
        .map_err(|e| failed(format!("no temp file: {e}")))?;
    let child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::from(input))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("it did not finish: {e}")))?;
    if !out.status.success() {
        // docker-credential-helpers report a missing entry on stdout with this text
        if String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("it exited with {}", out.status)));
    }
    if out.stdout.len() > 1 << 20 {
        return Err(failed("its reply is over 1 MiB".into()));
    }
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    // never echo the reply: it holds the secret
    let reply: Reply = serde_json::from_slice(&out.stdout)
        .map_err(|_| failed("its reply is not {\"Username\", \"Secret\"} JSON".into()))?;
    if reply.username == "<token>" {
        return Err(failed(
            "it holds an identity token, which loratool does not exchange".into(),
        ));
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: Secret::new(reply.secret),
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((k, v));
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Answer a challenge: Basic credentials, or a Bearer token fetched from the realm (with the
/// credentials when there are any). `scope` is used when the challenge names none.
pub fn answer(
    http: &Http,
    challenge: &Challenge,
    creds: Option<&Credentials>,
    scope: &str,
    allow_plain_http: bool,
    server: &str,
) -> Result<Secret> {
    match challenge.scheme.as_str() {
        "basic" => creds.map(Credentials::basic).ok_or_else(|| RemoteError::Unauthorized {
            server: server.to_string(),
            detail: String::new(),
            fix: "the registry wants a username and password: `docker login`, or set LORATOOL_REGISTRY_USERNAME and LORATOOL_REGISTRY_PASSWORD".into(),
        }),
        "bearer" => {
            let realm = challenge.param("realm").ok_or_else(|| {
                RemoteError::bad_reply(server, "Bearer challenge without a realm")
            })?;
            let secure = realm.starts_with("https://");
            if !(secure || allow_plain_http && realm.starts_with("http://")) {
                return Err(RemoteError::bad_reply(
                    server,
                    format!("token realm {} is not https", http::shown_url(realm)),
                ));
            }
            let mut url = format!("{realm}{}", if realm.contains('?') { "&" } else { "?" });
            if let Some(svc) = challenge.param("service") {
                url.push_str(&format!("service={}&", http::quote(svc, false)));
            }
            let scope = challenge.param("scope").unwrap_or(scope);
            url.push_str(&format!("scope={}", http::quote(scope, false)));
            let basic = creds.map(Credentials::basic);
            // the realm is a URL the registry chose; credentials go there as docker sends them
            let reply = http.send(&Request::get(url.clone()).auth(basic.as_ref()))?;
            if reply.status == 401 || reply.status == 403 {
                reply.discard();
                return Err(RemoteError::Unauthorized {
                    server: server.to_string(),
                    detail: String::new(),
                    fix: if creds.is_some() {
                        "the token service refused the credentials; check them (docker login / LORATOOL_REGISTRY_*)".into()
                    } else {
                        "the registry needs credentials: `docker login`, or set LORATOOL_REGISTRY_USERNAME and LORATOOL_REGISTRY_PASSWORD".into()
                    },
                });
            }
            if !(200..300).contains(&reply.status) {
                return Err(RemoteError::Status {
                    url: http::shown_url(&url),
                    status: reply.status,
                    detail: " from the token service".into(),
                });
            }
            let token = super::replies::check_token(&url, reply.json(1 << 20)?)?;
            Ok(Secret::bearer(&token))
        }
        other => Err(RemoteError::bad_reply(
            server,
            format!("unsupported auth scheme '{}'", http::clean_text(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull"));
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.param("realm"), Some("Registry Realm"));
    }

    #[test]
    fn credentials_do_not_print() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
