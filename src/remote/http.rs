//! HTTP for the remote clients: one blocking agent with loratool's timeouts; requests with
//! bounded retries and backoff; redirects followed by hand, so credentials only ever go to the
//! origin they were given for; JSON replies read with a size cap; downloads streamed into a
//! file while hashing, resumed with `Range` when a connection drops.
//!
//! It knows no protocol: the Hub and OCI clients build on it.

use super::error::{RemoteError, Result};
use sha2::Digest as _;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;
use ureq::http::{self, HeaderMap, Method};

/// Timeouts and retry policy. `from_env` reads `LORATOOL_HTTP_TIMEOUT` (seconds without a byte
/// before a transfer counts as stalled), `LORATOOL_HTTP_RETRIES` and `LORATOOL_HTTP_BACKOFF_MS`
/// (the first wait; it doubles up to `max_backoff`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        // huggingface_hub's http_backoff: 5 retries, 1 s doubling to 8 s
        HttpConfig {
            stall_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(20),
            retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl HttpConfig {
    pub fn from_env() -> HttpConfig {
        let mut c = HttpConfig::default();
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(s) = num("LORATOOL_HTTP_TIMEOUT") {
            c.stall_timeout = Duration::from_secs(s.clamp(1, 3600));
        }
        if let Some(n) = num("LORATOOL_HTTP_RETRIES") {
            c.retries = n.min(20) as u32;
        }
        if let Some(ms) = num("LORATOOL_HTTP_BACKOFF_MS") {
            c.backoff = Duration::from_millis(ms.min(60_000));
            c.max_backoff = c.max_backoff.max(c.backoff);
        }
        c
    }

    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        // a server's Retry-After is honoured, within the same cap (a hostile one cannot park us)
        retry_after.map_or(exp, |r| r.min(self.max_backoff.max(self.backoff)))
    }
}

/// A credential: an `Authorization` header value. It never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    pub fn bearer(token: &str) -> Secret {
        Secret(format!("Bearer {token}"))
    }
    pub fn basic(user: &str, password: &str) -> Secret {
        use base64::Engine as _;
        Secret(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub use super::error::shown_url;

/// `scheme://host:port` of a URL, lowercased, with the default port filled in.
pub fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some(format!("{scheme}://{host}:{port}"))
}

/// Resolve a `Location` header against the URL it answered.
pub fn join_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let uri: http::Uri = base.parse().ok()?;
    let authority = uri.authority()?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = uri.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// Percent-encode a path segment (everything but unreserved characters), or a path keeping
/// its `/` separators.
pub fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode `%XX` escapes (for references typed with an escaped `/` in a revision).
pub fn unquote(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a request sends.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset` (re-read on each retry).
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

/// Whether a request follows redirects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    Follow,
    /// Return the 3xx itself (the Hub puts a file's metadata on the redirect).
    Stop,
    /// Follow only to the same origin (huggingface_hub's rule for metadata requests).
    SameOrigin,
}

pub struct Request<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// Sent only to the origin of `url`: never after a redirect to another origin.
    pub auth: Option<&'a Secret>,
    pub body: Body<'a>,
    pub redirects: Redirects,
    /// Retry on 408/429/5xx and dropped connections. Off for requests that must not run twice
    /// (a commit whose answer was lost would otherwise be made twice).
    pub retry: bool,
    /// Told about each block of a `Body::File` as it is sent.
    pub upload_progress: Option<&'a dyn super::Progress>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: impl Into<String>) -> Request<'a> {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            auth: None,
            body: Body::Empty,
            redirects: Redirects::Follow,
            retry: true,
            upload_progress: None,
        }
    }
    pub fn upload_progress(mut self, p: &'a dyn super::Progress) -> Self {
        self.upload_progress = Some(p);
        self
    }
    pub fn get(url: impl Into<String>) -> Request<'a> {
        Request::new(Method::GET, url)
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn auth(mut self, auth: Option<&'a Secret>) -> Self {
        self.auth = auth;
        self
    }
    pub fn body(mut self, body: Body<'a>) -> Self {
        self.body = body;
        self
    }
    pub fn redirects(mut self, r: Redirects) -> Self {
        self.redirects = r;
        self
    }
    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

/// A response: status, headers, the URL that answered, and the unread body.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The URL that gave this answer (after redirects).
    pub url: String,
    body: ureq::Body,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header bounded to printable ASCII and 300 characters (server text shown to users).
    pub fn header_text(&self, name: &str) -> Option<String> {
        self.header(name).map(clean_text)
    }

    /// The body, refusing more than `cap` bytes.
    pub fn bytes(self, cap: u64) -> Result<Vec<u8>> {
        let url = self.url.clone();
        let mut body = self.body;
        body.with_config()
            .limit(cap)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    RemoteError::bad_reply(&url, format!("reply larger than {cap} bytes"))
                }
                e => network_error(&url, e),
            })
    }

    /// The body as JSON of type `T`, refusing more than `cap` bytes.
    pub fn json<T: serde::de::DeserializeOwned>(self, cap: u64) -> Result<T> {
        let url = self.url.clone();
        let bytes = self.bytes(cap)?;
        decode_json(&url, &bytes)
    }

    /// Drain and drop the body (keeps the connection reusable), reading at most 64 KiB.
    pub fn discard(self) {
        let _ = self.bytes(64 << 10);
    }

    pub fn into_reader(self) -> impl Read {
        self.body.into_reader()
    }
}

/// Server text for an error message: printable ASCII only, at most 300 characters.
/// A reply body as JSON of type `T` (the decoding step every reply parser starts with).
pub fn decode_json<T: serde::de::DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| RemoteError::bad_reply(url, format!("not the JSON expected: {e}")))
}

pub fn clean_text(s: &str) -> String {
    let mut t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    if s.chars().count() > 300 {
        t.push_str("...");
    }
    t
}

fn network_error(url: &str, e: ureq::Error) -> RemoteError {
    let message = match &e {
        ureq::Error::Timeout(t) => format!(
            "timed out ({t:?}): the server sent nothing for too long; set LORATOOL_HTTP_TIMEOUT (seconds) to wait longer"
        ),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => other.to_string(),
    };
    RemoteError::Network {
        url: shown_url(url),
        message,
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// One agent (connection pool) with loratool's settings.
pub struct Http {
    agent: ureq::Agent,
    pub config: HttpConfig,
    user_agent: String,
}

impl Http {
    pub fn new(config: HttpConfig) -> Http {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.stall_timeout))
            .timeout_per_write(Some(config.stall_timeout))
            .timeout_recv_response(Some(config.stall_timeout))
            .user_agent(ureq::config::AutoHeaderValue::None)
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .build();
        Http {
            agent: ureq::Agent::new_with_config(agent_config),
            config,
            user_agent: format!("loratool/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Send with retries and redirects (see [`Request`]).
    pub fn send(&self, req: &Request<'_>) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            let last = !req.retry || attempt >= self.config.retries;
            match self.send_following(req) {
                Ok(reply) if !last && retryable_status(reply.status) => {
                    let retry_after = reply
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    reply.discard();
                    std::thread::sleep(self.config.wait(attempt, retry_after));
                }
                Ok(reply) => return Ok(reply),
                Err(SendError::Transport(e)) if !last => {
                    let _ = e;
                    std::thread::sleep(self.config.wait(attempt, None));
                }
                Err(SendError::Transport(e)) => return Err(network_error(&req.url, e)),
                Err(SendError::Other(e)) => return Err(e),
            }
            attempt += 1;
        }
    }

    fn send_following(&self, req: &Request<'_>) -> std::result::Result<Reply, SendError> {
        let auth_origin = origin(&req.url);
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        for _hop in 0..10 {
            let with_auth = req.auth.filter(|_| origin(&url) == auth_origin);
            let reply = self.send_once(&method, &url, req, with_auth)?;
            let redirect = matches!(reply.status, 301 | 302 | 303 | 307 | 308);
            if !redirect || req.redirects == Redirects::Stop {
                return Ok(reply);
            }
            let Some(next) = reply
                .header("location")
                .and_then(|l| join_location(&url, l))
            else {
                return Ok(reply);
            };
            if req.redirects == Redirects::SameOrigin && origin(&next) != origin(&url) {
                return Ok(reply);
            }
            if url.starts_with("https://") && next.starts_with("http://") {
                return Err(SendError::Other(RemoteError::bad_reply(
                    &url,
                    format!(
                        "redirect from https to plain http ({}) refused",
                        shown_url(&next)
                    ),
                )));
            }
            let status = reply.status;
            reply.discard();
            // 301/302/303 turn a POST into a GET (as browsers and huggingface_hub's httpx do);
            // 307/308 repeat the request as it was
            if matches!(status, 301..=303) && method != Method::GET && method != Method::HEAD {
                method = Method::GET;
            }
            url = next;
        }
        Err(SendError::Other(RemoteError::bad_reply(
            &req.url,
            "more than 10 redirects",
        )))
    }

    fn send_once(
        &self,
        method: &Method,
        url: &str,
        req: &Request<'_>,
        auth: Option<&Secret>,
    ) -> std::result::Result<Reply, SendError> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("user-agent", &self.user_agent);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            builder = builder.header("authorization", a.expose());
        }
        let bad = |e: http::Error| {
            SendError::Other(RemoteError::Invalid(format!(
                "cannot build a request to {}: {e}",
                shown_url(url)
            )))
        };
        let sending_body = *method != Method::GET && *method != Method::HEAD;
        let result = match (&req.body, sending_body) {
            (Body::Bytes(b), true) => {
                let r = builder
                    .header("content-length", b.len().to_string())
                    .body(*b)
                    .map_err(bad)?;
                self.agent.run(r)
            }
            (Body::File { file, offset, len }, true) => {
                let mut f: &File = file;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|e| SendError::Other(RemoteError::io("<upload source>", e)))?;
                let mut reader = Counting {
                    inner: f.take(*len),
                    progress: req.upload_progress,
                };
                let r = builder
                    .header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(bad)?;
                self.agent.run(r)
            }
            (_, true) => {
                let r = builder
                    .header("content-length", "0")
                    .body(())
                    .map_err(bad)?;
                self.agent.run(r)
            }
            (_, false) => {
                let r = builder.body(()).map_err(bad)?;
                self.agent.run(r)
            }
        };
        let response = result.map_err(SendError::Transport)?;
        let (parts, body) = response.into_parts();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            url: url.to_string(),
            body,
        })
    }

    /// GET `url` into `out` (already holding `out_len` verified-by-hash bytes fed to `hash`),
    /// resuming with `Range` after a dropped connection. Checks the size against `expected`
    /// as it goes. Returns the final length.
    pub fn download(
        &self,
        url: &str,
        auth: Option<&Secret>,
        out: &mut File,
        hash: &mut Hasher,
        expected: Option<u64>,
        progress: &dyn super::Progress,
    ) -> Result<u64> {
        let mut have = hash.len;
        let mut attempt = 0u32;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if expected == Some(have) && have > 0 {
                return Ok(have);
            }
            let mut req = Request::get(url)
                .auth(auth)
                .header("accept-encoding", "identity");
            if have > 0 {
                req = req.header("range", format!("bytes={have}-"));
            }
            let reply = self.send(&req)?;
            match reply.status {
                200 => {
                    if have > 0 {
                        // the server ignored Range: start over
                        out.set_len(0)
                            .map_err(|e| RemoteError::io("<download>", e))?;
                        out.seek(SeekFrom::Start(0))
                            .map_err(|e| RemoteError::io("<download>", e))?;
                        progress.advance_back(have);
                        hash.reset();
                        have = 0;
                    }
                }
                206 => {
                    let start = reply
                        .header("content-range")
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(have) {
                        return Err(RemoteError::bad_reply(
                            &reply.url,
                            format!(
                                "asked for bytes from {have}, got Content-Range {:?}",
                                reply.header_text("content-range")
                            ),
                        ));
                    }
                }
                s => {
                    return Err(RemoteError::Status {
                        url: shown_url(&reply.url),
                        status: s,
                        detail: String::new(),
                    })
                }
            }
            if let (Some(exp), Some(len)) = (
                expected,
                reply
                    .header("content-length")
                    .and_then(|v| v.parse::<u64>().ok()),
            ) {
                if have + len != exp {
                    return Err(RemoteError::integrity(
                        &reply.url,
                        format!(
                            "the server sends {} bytes, but the file has {exp}",
                            have + len
                        ),
                    ));
                }
            }
            let reply_url = reply.url.clone();
            let mut body = reply.into_reader();
            let dropped = loop {
                match body.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if expected.is_some_and(|e| have + n as u64 > e) {
                            return Err(RemoteError::integrity(
                                &reply_url,
                                format!("more bytes than the {} announced", expected.unwrap_or(0)),
                            ));
                        }
                        out.write_all(&buf[..n])
                            .map_err(|e| RemoteError::io("<download>", e))?;
                        hash.update(&buf[..n]);
                        have += n as u64;
                        progress.advance(n as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                }
            };
            match dropped {
                None => {
                    if let Some(exp) = expected {
                        if have != exp {
                            // a clean close before the end: resume like a drop
                            if attempt < self.config.retries {
                                attempt += 1;
                                std::thread::sleep(self.config.wait(attempt - 1, None));
                                continue;
                            }
                            return Err(RemoteError::integrity(
                                url,
                                format!("the body ended after {have} of {exp} bytes"),
                            ));
                        }
                    }
                    return Ok(have);
                }
                Some(e) => {
                    if attempt >= self.config.retries {
                        let why = if e.kind() == std::io::ErrorKind::TimedOut
                            || e.to_string().contains("timeout")
                        {
                            format!(
                                "timed out: no data for {} s (set LORATOOL_HTTP_TIMEOUT to wait longer)",
                                self.config.stall_timeout.as_secs()
                            )
                        } else {
                            e.to_string()
                        };
                        return Err(RemoteError::Network {
                            url: shown_url(url),
                            message: format!(
                                "the transfer failed after {have} bytes and {attempt} resumed attempts: {why}"
                            ),
                        });
                    }
                    attempt += 1;
                    std::thread::sleep(self.config.wait(attempt - 1, None));
                }
            }
        }
    }
}

/// A reader that reports the bytes read from it.
struct Counting<'p, R> {
    inner: R,
    progress: Option<&'p dyn super::Progress>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.advance(n as u64);
        }
        Ok(n)
    }
}

enum SendError {
    Transport(ureq::Error),
    Other(RemoteError),
}

/// Hashes computed while downloading: always sha256, and the git blob SHA-1 when the expected
/// size is known (the Hub's ETag for regular files).
pub struct Hasher {
    sha256: sha2::Sha256,
    git_sha1: Option<sha1::Sha1>,
    git_size: Option<u64>,
    pub len: u64,
}

impl Hasher {
    pub fn new(git_size: Option<u64>) -> Hasher {
        let mut h = Hasher {
            sha256: sha2::Sha256::new(),
            git_sha1: None,
            git_size,
            len: 0,
        };
        h.reset();
        h
    }
    pub fn reset(&mut self) {
        self.sha256 = sha2::Sha256::new();
        self.git_sha1 = self.git_size.map(|n| {
            let mut s = sha1::Sha1::new();
            s.update(format!("blob {n}\0").as_bytes());
            s
        });
        self.len = 0;
    }
    pub fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        if let Some(s) = &mut self.git_sha1 {
            s.update(b);
        }
        self.len += b.len() as u64;
    }
    /// Feed what a partial file already holds.
    pub fn update_from(&mut self, f: &mut File) -> std::io::Result<()> {
        f.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.update(&buf[..n]);
        }
        Ok(())
    }
    /// `(sha256 hex, git sha1 hex)`.
    pub fn finish(self) -> (String, Option<String>) {
        (
            hex::encode(self.sha256.finalize()),
            self.git_sha1.map(|s| hex::encode(s.finalize())),
        )
    }
}

/// The git blob SHA-1 of a file (`blob <len>\0` + content): the Hub's oid for regular files.
pub fn git_blob_sha1(path: &std::path::Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| RemoteError::io(path, e))?;
    let len = f.metadata().map_err(|e| RemoteError::io(path, e))?.len();
    let mut h = Hasher::new(Some(len));
    h.update_from(&mut f)
        .map_err(|e| RemoteError::io(path, e))?;
    Ok(h.finish().1.unwrap_or_default())
}

/// The sha256 hex of a file.
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| RemoteError::io(path, e))?;
    let mut h = Hasher::new(None);
    h.update_from(&mut f)
        .map_err(|e| RemoteError::io(path, e))?;
    Ok(h.finish().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_drops_query_and_userinfo() {
        assert_eq!(
            shown_url("https://u:p@cdn.example/x/y?X-Amz-Signature=abc"),
            "https://cdn.example/x/y"
        );
        assert_eq!(shown_url("http://h:8/a"), "http://h:8/a");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(origin("http://a:80/x"), origin("http://A/y"));
        assert_ne!(origin("http://a:81/x"), origin("http://a/y"));
        assert_ne!(origin("https://a/x"), origin("http://a/y"));
    }

    #[test]
    fn locations_resolve_against_the_request() {
        assert_eq!(
            join_location("http://h:1/a/b?q", "/c").as_deref(),
            Some("http://h:1/c")
        );
        assert_eq!(
            join_location("http://h:1/a/b", "c").as_deref(),
            Some("http://h:1/a/c")
        );
        assert_eq!(
            join_location("http://h:1/a", "http://o:2/z").as_deref(),
            Some("http://o:2/z")
        );
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(quote("a b/c.json", true), "a%20b/c.json");
        assert_eq!(unquote("refs%2Fpr%2F1").as_deref(), Some("refs/pr/1"));
    }

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let mut h = Hasher::new(Some(6));
        h.update(b"hello\n");
        assert_eq!(
            h.finish().1.as_deref(),
            Some("ce013625030ba8dba906f756967f9e9ca394464a")
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::bearer("hf_abcdef");
        assert!(!format!("{s:?}").contains("abcdef"));
    }
}
