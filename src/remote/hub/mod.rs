//! The Hugging Face Hub client: references (`hf://owner/name[@rev][/subfolder]`), configuration
//! from the same environment variables huggingface_hub reads, the API calls with the Hub's
//! error mapping, and the listings. Downloads are in `fetch`, the cache layout in `cache`,
//! uploads in `push`, the model card in `card`, the decoding of the Hub's replies in `replies`.
//!
//! The protocol is the one huggingface_hub speaks with Xet disabled (see
//! /work/shared/reference/mergekit-hub-and-crates.md §2 and §6).

pub mod cache;
pub mod card;
pub mod fetch;
pub mod push;
pub mod replies;

use super::error::{RemoteError, Result};
use super::http::{self, clean_text, quote, Http, HttpConfig, Reply, Request, Secret};
use std::path::PathBuf;

pub use fetch::{fetch, FetchOptions};
pub use push::{push, PushOptions, PushReport};
pub use replies::{LfsInfo, TreeEntry};

/// JSON replies of the listing calls are capped (a repo info lists every file; 64 MiB is far
/// beyond any real repository's listing page).
const MAX_LISTING_BYTES: u64 = 64 << 20;
/// Small API replies (create, preupload, batch, commit).
pub(crate) const MAX_API_BYTES: u64 = 8 << 20;

/// `hf://owner/name[@revision][/subfolder]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRef {
    /// `owner/name`
    pub repo: String,
    /// A branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
    /// A folder inside the repository, without leading or trailing `/`.
    pub subfolder: Option<String>,
}

impl HubRef {
    /// Parse. A revision holding `/` (`refs/pr/1`) is written escaped: `@refs%2Fpr%2F1`.
    pub fn parse(s: &str) -> Result<HubRef> {
        let rest = s
            .strip_prefix("hf://")
            .ok_or_else(|| RemoteError::bad_ref(s, "expected hf://owner/name"))?;
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or("");
        let name_rev = parts
            .next()
            .ok_or_else(|| RemoteError::bad_ref(s, "expected hf://owner/name"))?;
        let sub = parts.next().map(|p| p.trim_end_matches('/'));
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => {
                let r = http::unquote(r)
                    .filter(|r| valid_revision(r))
                    .ok_or_else(|| RemoteError::bad_ref(s, format!("'{r}' is not a revision")))?;
                (n, Some(r))
            }
            None => (name_rev, None),
        };
        for part in [owner, name] {
            if !valid_repo_part(part) {
                return Err(RemoteError::bad_ref(
                    s,
                    format!("'{part}' is not a Hub name: use letters, digits, '-', '_' and '.', at most 96, not starting or ending with '-' or '.', no '--' or '..'"),
                ));
            }
        }
        let subfolder = match sub {
            None | Some("") => None,
            Some(p) => {
                if !safe_repo_path(p) {
                    return Err(RemoteError::bad_ref(
                        s,
                        format!("'{p}' is not a folder path inside a repository"),
                    ));
                }
                Some(p.to_string())
            }
        };
        Ok(HubRef {
            repo: format!("{owner}/{name}"),
            revision,
            subfolder,
        })
    }

    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The same reference at another revision (a pinned commit).
    pub fn at(&self, revision: &str) -> HubRef {
        HubRef {
            revision: Some(revision.to_string()),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hf://{}", self.repo)?;
        if let Some(r) = &self.revision {
            // escaped as `parse` unescapes: `%` first, so a revision holding `%` reads back
            write!(f, "@{}", r.replace('%', "%25").replace('/', "%2F"))?;
        }
        if let Some(s) = &self.subfolder {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

/// huggingface_hub's `validate_repo_id` rules for one part of `owner/name`.
fn valid_repo_part(p: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !p.is_empty()
        && p.len() <= 96
        && p.chars().all(ok_char)
        && !p.starts_with(['-', '.'])
        && !p.ends_with(['-', '.'])
        && !p.contains("--")
        && !p.contains("..")
}

fn valid_revision(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && !r.contains("..")
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.contains("//")
        && r.chars().all(|c| c.is_ascii_graphic() && c != '\\')
}

/// A relative path inside a repository: `/`-separated, no empty, `.` or `..` component, no
/// backslash or control character, not under `.git` (what a hostile listing must not name).
pub fn safe_repo_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.contains('\\')
        && !p.chars().any(|c| c.is_control())
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c != ".git")
}

/// Where the Hub is, who we are, where the cache lives: the environment huggingface_hub reads.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, else `https://huggingface.co`; no trailing `/`.
    pub endpoint: String,
    /// `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `$HF_TOKEN_PATH` / `$HF_HOME/token`.
    pub token: Option<Secret>,
    /// `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`.
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to 1/true/yes/on.
    pub offline: bool,
    pub http: HttpConfig,
}

impl HubConfig {
    pub fn from_env() -> Result<HubConfig> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let path = |k: &str| var(k).map(PathBuf::from);
        let hf_home = match path("HF_HOME") {
            Some(h) => h,
            None => match path("XDG_CACHE_HOME") {
                Some(x) => x.join("huggingface"),
                None => path("HOME")
                    .map(|h| h.join(".cache/huggingface"))
                    .ok_or_else(|| {
                        RemoteError::Invalid(
                            "cannot find the Hugging Face cache: set HF_HOME or HF_HUB_CACHE"
                                .into(),
                        )
                    })?,
            },
        };
        let cache = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = path("HF_TOKEN_PATH").unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                std::fs::read_to_string(&token_file)
                    .ok()
                    .filter(|t| !t.trim().is_empty())
            })
            .map(|t| Secret::bearer(t.trim()));
        let truthy = |k: &str| {
            var(k).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        };
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".to_string())
            .trim()
            .trim_end_matches('/')
            .to_string();
        Ok(HubConfig {
            endpoint,
            token,
            cache,
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
            http: HttpConfig::from_env(),
        })
    }
}

/// A connection to one Hub endpoint.
pub struct HubClient {
    pub config: HubConfig,
    http: Http,
}

impl HubClient {
    pub fn new(config: HubConfig) -> Result<HubClient> {
        let loopback = is_loopback_url(&config.endpoint);
        if !config.endpoint.starts_with("https://") && !config.endpoint.starts_with("http://") {
            return Err(RemoteError::Invalid(format!(
                "HF_ENDPOINT '{}' is not an http(s) URL",
                clean_text(&config.endpoint)
            )));
        }
        if config.endpoint.starts_with("http://") && !loopback && config.token.is_some() {
            return Err(RemoteError::Invalid(format!(
                "HF_ENDPOINT {} is plain http on a non-loopback host: the token would travel unencrypted; use https",
                config.endpoint
            )));
        }
        let http = Http::new(config.http.clone());
        Ok(HubClient { config, http })
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    pub fn server(&self) -> String {
        self.config.endpoint.clone()
    }

    /// The token, if `url` is on the endpoint's origin (never to a CDN or an upload href).
    pub fn auth_for(&self, url: &str) -> Option<&Secret> {
        let same =
            http::origin(url).is_some() && http::origin(url) == http::origin(&self.config.endpoint);
        self.config.token.as_ref().filter(|_| same)
    }

    pub fn api_url(&self, tail: &str) -> String {
        format!("{}/api/models/{}", self.config.endpoint, tail)
    }

    /// Send `req` (auth added for the endpoint's origin) and map a non-2xx answer to an error.
    pub fn call(&self, req: Request<'_>, ctx: &Ctx<'_>) -> Result<Reply> {
        let auth = self.auth_for(&req.url);
        let req = req.auth(auth);
        let reply = self.http.send(&req)?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(self.status_error(reply, ctx))
        }
    }

    /// The error for a non-2xx answer: the Hub's `X-Error-Code` first, then the status.
    pub fn status_error(&self, reply: Reply, ctx: &Ctx<'_>) -> RemoteError {
        let server = self.server();
        let code = reply.header_text("x-error-code");
        let message = reply.header("x-error-message").map(str::to_string);
        let status = reply.status;
        let url = reply.url.clone();
        let body = if message.is_none() {
            reply.bytes(4096).ok()
        } else {
            reply.discard();
            None
        };
        let message = replies::error_message(message.as_deref(), body.as_deref());
        let detail = message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        let has_token = self.config.token.is_some();
        match code.as_deref() {
            Some("RepoNotFound") => {
                return RemoteError::RepoNotFound {
                    server,
                    repo: ctx.repo.to_string(),
                    hint: if has_token {
                        "; check the name, and that your token can read it if it is private".into()
                    } else {
                        "; check the name; if it is private, set HF_TOKEN".into()
                    },
                }
            }
            Some("RevisionNotFound") => {
                return RemoteError::RevisionNotFound {
                    server,
                    repo: ctx.repo.to_string(),
                    revision: ctx.revision.to_string(),
                }
            }
            Some("EntryNotFound") => {
                return RemoteError::EntryNotFound {
                    server,
                    repo: ctx.repo.to_string(),
                    revision: ctx.revision.to_string(),
                    path: ctx.path.unwrap_or("").to_string(),
                }
            }
            Some("GatedRepo") => {
                return RemoteError::Forbidden {
                    server,
                    detail,
                    fix: format!(
                        "{} is gated: accept its conditions on the Hub with the account of your HF_TOKEN",
                        ctx.repo
                    ),
                }
            }
            _ => {}
        }
        match status {
            401 => RemoteError::Unauthorized {
                server,
                detail,
                fix: if has_token {
                    "the token was refused; check HF_TOKEN (or $HF_HOME/token)".into()
                } else {
                    "no token: set HF_TOKEN or log in with `hf auth login`".into()
                },
            },
            403 => RemoteError::Forbidden {
                server,
                detail,
                fix: format!(
                    "the token cannot {} {}; use a token with write access (a fine-grained token needs the repo's write permission)",
                    if ctx.write { "write to" } else { "read" },
                    ctx.repo
                ),
            },
            404 if code.is_none() => RemoteError::WrongServer {
                server,
                message: format!(
                    "{} answered 404 without the Hub's X-Error-Code: is HF_ENDPOINT a Hugging Face Hub?",
                    http::shown_url(&url)
                ),
            },
            _ => RemoteError::Status {
                url: http::shown_url(&url),
                status,
                detail: match code {
                    Some(c) => format!(" {c}{detail}"),
                    None => detail,
                },
            },
        }
    }

    /// Decode a JSON reply, calling anything that is not JSON "not a Hub".
    pub fn json<T: serde::de::DeserializeOwned>(&self, reply: Reply, cap: u64) -> Result<T> {
        let url = reply.url.clone();
        let ctype = reply.header("content-type").unwrap_or("").to_string();
        reply.json(cap).map_err(|e| match e {
            RemoteError::BadReply { message, .. } if !ctype.contains("json") => {
                RemoteError::WrongServer {
                    server: self.server(),
                    message: format!(
                        "{} did not answer JSON (content-type '{}'): is HF_ENDPOINT a Hugging Face Hub? ({message})",
                        http::shown_url(&url),
                        clean_text(&ctype)
                    ),
                }
            }
            e => e,
        })
    }

    /// The commit a revision points at (`GET /api/models/{repo}/revision/{rev}`).
    pub fn revision_sha(&self, repo: &str, revision: &str) -> Result<String> {
        let url = self.api_url(&format!("{repo}/revision/{}", quote(revision, false)));
        let ctx = Ctx::new(repo, revision);
        let reply = self.call(Request::get(url.clone()), &ctx)?;
        replies::check_revision(&url, self.json(reply, MAX_LISTING_BYTES)?)
    }

    /// Every entry of a commit, recursively (pages followed through the `Link` header).
    pub fn tree(&self, repo: &str, commit: &str) -> Result<Vec<TreeEntry>> {
        let mut url = self.api_url(&format!(
            "{repo}/tree/{}?recursive=true&expand=false",
            quote(commit, false)
        ));
        let ctx = Ctx::new(repo, commit);
        let mut out = Vec::new();
        for _page in 0..10_000 {
            let reply = self.call(Request::get(url.clone()), &ctx)?;
            let next = reply.header("link").and_then(replies::next_link);
            let page = replies::check_tree_page(&url, self.json(reply, MAX_LISTING_BYTES)?)?;
            out.extend(page);
            match next {
                Some(n) => {
                    let n = http::join_location(&url, &n).unwrap_or(n);
                    if http::origin(&n) != http::origin(&self.config.endpoint) {
                        return Err(RemoteError::bad_reply(
                            &url,
                            "tree pagination leaves the endpoint",
                        ));
                    }
                    url = n;
                }
                None => return Ok(out),
            }
        }
        Err(RemoteError::bad_reply(&url, "more than 10000 tree pages"))
    }
}

/// What a call was about, for its error message.
pub struct Ctx<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub path: Option<&'a str>,
    pub write: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(repo: &'a str, revision: &'a str) -> Ctx<'a> {
        Ctx {
            repo,
            revision,
            path: None,
            write: false,
        }
    }
}

pub fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether a URL's host is a loopback address (127.0.0.0/8, ::1, localhost).
pub fn is_loopback_url(url: &str) -> bool {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .is_some_and(|h| is_loopback_host(&h))
}

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = HubRef::parse("hf://acme/style-lora@v1.2/unet").unwrap();
        assert_eq!(r.repo, "acme/style-lora");
        assert_eq!(r.revision.as_deref(), Some("v1.2"));
        assert_eq!(r.subfolder.as_deref(), Some("unet"));
        assert_eq!(r.to_string(), "hf://acme/style-lora@v1.2/unet");
        let pr = HubRef::parse("hf://a/b@refs%2Fpr%2F3").unwrap();
        assert_eq!(pr.revision.as_deref(), Some("refs/pr/3"));
        assert_eq!(pr.to_string(), "hf://a/b@refs%2Fpr%2F3");
        assert_eq!(HubRef::parse("hf://a/b/").unwrap().subfolder, None);
        for bad in [
            "hf://a",
            "hf://a/b--c",
            "hf://-a/b",
            "hf://a/b/../c",
            "hf://a/b/x//y",
            "hf://a/b@",
            "hf://a/b/.git/x",
        ] {
            assert!(HubRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_never_goes_over_plain_http_to_another_host() {
        let config = |endpoint: &str| HubConfig {
            endpoint: endpoint.into(),
            token: Some(Secret::bearer("hf_x")),
            cache: PathBuf::from("/nonexistent"),
            offline: false,
            http: HttpConfig::default(),
        };
        assert!(HubClient::new(config("http://hub.example")).is_err());
        assert!(HubClient::new(config("http://127.0.0.1:8080")).is_ok());
        let c = HubClient::new(config("https://hub.example")).unwrap();
        assert!(c.auth_for("https://hub.example/api/x").is_some());
        assert!(c.auth_for("https://cdn.example/x").is_none());
        assert!(c.auth_for("http://hub.example/x").is_none());
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_url("http://127.0.0.1:9/x"));
        assert!(is_loopback_url("http://localhost:9/x"));
        assert!(is_loopback_url("http://[::1]:9/x"));
        assert!(!is_loopback_url("http://10.0.0.1/x"));
    }
}
