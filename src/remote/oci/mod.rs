//! The OCI distribution client: references (`oci://host[:port]/repository[:tag|@digest]`),
//! authentication (anonymous, Basic, Bearer through the `WWW-Authenticate` challenge), and
//! push/pull of a stored adapter's ModelPack manifest and blobs, byte for byte, so digests are
//! the same on both sides. Pull verifies every blob before it enters the store. The decoding
//! of the registry's replies is in `replies`.

pub mod auth;
pub mod replies;

use super::error::{RemoteError, Result};
use super::http::{self, Body, Hasher, Http, HttpConfig, Reply, Request, Secret};
use super::Progress;
use crate::registry::manifest::{
    Manifest, ModelConfig, MAX_MANIFEST_BYTES, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_MODEL_CONFIG,
};
use crate::registry::{Digest, Reference, Store};
use auth::Credentials;
use std::cell::RefCell;
use std::fs::File;
use ureq::http::Method;

/// Blobs are uploaded in PATCH chunks of this size (distribution accepts any size; 16 MiB
/// keeps a failed chunk cheap to resend).
pub const DEFAULT_CHUNK_BYTES: u64 = 16 << 20;
/// The annotation on a pulled tag in `index.json` saying where it came from.
pub const ANNOTATION_SOURCE: &str = "dev.loratool.remote.source";

/// `oci://host[:port]/repository[:tag|@sha256:...]`; the tag defaults to `latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciRef {
    /// `host[:port]`
    pub registry: String,
    pub repository: String,
    pub target: OciTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciTarget {
    Tag(String),
    Digest(Digest),
}

impl OciRef {
    pub fn parse(s: &str) -> Result<OciRef> {
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| RemoteError::bad_ref(s, "expected oci://host[:port]/repository:tag"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| RemoteError::bad_ref(s, "expected oci://host[:port]/repository:tag"))?;
        if !valid_registry(registry) {
            return Err(RemoteError::bad_ref(
                s,
                format!("'{registry}' is not host[:port]"),
            ));
        }
        let (repository, target) = if let Some((r, d)) = path.split_once('@') {
            let d = Digest::parse(d).ok_or_else(|| {
                RemoteError::bad_ref(s, "the digest must be sha256: and 64 lowercase hex digits")
            })?;
            (r, OciTarget::Digest(d))
        } else {
            match path.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, OciTarget::Tag(t.to_string())),
                _ => (path, OciTarget::Tag("latest".into())),
            }
        };
        if !valid_repository(repository) {
            return Err(RemoteError::bad_ref(
                s,
                format!("'{repository}' is not a repository name (lowercase components separated by '/')"),
            ));
        }
        if let OciTarget::Tag(t) = &target {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(RemoteError::bad_ref(s, format!("'{t}' is not a tag")));
            }
        }
        Ok(OciRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            target,
        })
    }

    /// The tag or digest as it goes in a manifest URL.
    pub fn reference(&self) -> &str {
        match &self.target {
            OciTarget::Tag(t) => t,
            OciTarget::Digest(d) => d.as_str(),
        }
    }

    /// The registry host without the port.
    pub fn host(&self) -> &str {
        if let Some(rest) = self.registry.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        self.registry.split(':').next().unwrap_or(&self.registry)
    }

    pub fn pinned(&self, digest: &Digest) -> String {
        format!("oci://{}/{}@{digest}", self.registry, self.repository)
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            OciTarget::Tag(t) => write!(f, "oci://{}/{}:{t}", self.registry, self.repository),
            OciTarget::Digest(d) => write!(f, "oci://{}/{}@{d}", self.registry, self.repository),
        }
    }
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// distribution's grammar: components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
fn valid_repository(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 255
        && r.split('/').all(|c| {
            let b = c.as_bytes();
            let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
            if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &c[start..i];
                let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
                if !ok {
                    return false;
                }
            }
            true
        })
}

/// How to reach a registry.
#[derive(Clone, Debug, Default)]
pub struct OciOptions {
    /// Allow plain HTTP to a non-loopback registry (`--plain-http`).
    pub plain_http: bool,
    /// Credentials from flags; otherwise the environment, then the docker config.
    pub credentials: Option<Credentials>,
    pub chunk_bytes: Option<u64>,
    pub http: Option<HttpConfig>,
}

/// A session with one repository of one registry.
pub struct OciClient {
    http: Http,
    base: String,
    repository: String,
    server: String,
    creds: Option<Credentials>,
    plain_http: bool,
    auth: RefCell<Option<Secret>>,
    scope: String,
}

impl OciClient {
    pub fn new(r: &OciRef, opts: &OciOptions, push: bool) -> Result<OciClient> {
        let loopback = super::hub::is_loopback_host(r.host());
        let plain = opts.plain_http || loopback;
        let scheme = if plain { "http" } else { "https" };
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => match auth::from_env() {
                Some(c) => Some(c),
                None => auth::from_docker_config(&r.registry)?,
            },
        };
        Ok(OciClient {
            http: Http::new(opts.http.clone().unwrap_or_else(HttpConfig::from_env)),
            base: format!("{scheme}://{}", r.registry),
            repository: r.repository.clone(),
            server: format!("{scheme}://{}", r.registry),
            creds,
            plain_http: plain,
            auth: RefCell::new(None),
            scope: format!(
                "repository:{}:{}",
                r.repository,
                if push { "pull,push" } else { "pull" }
            ),
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// Send with the session's auth; on 401 answer the challenge once and resend.
    fn send(&self, build: &dyn Fn() -> Request<'static>) -> Result<Reply> {
        self.send_with(&|| build())
    }

    fn send_with<'b>(&self, build: &dyn Fn() -> Request<'b>) -> Result<Reply> {
        for round in 0..2 {
            let auth = self.auth.borrow().clone();
            let req = build();
            let req = req.auth(auth.as_ref());
            let reply = self.http.send(&req)?;
            if reply.status != 401 || round == 1 {
                if reply.status == 401 {
                    reply.discard();
                    return Err(RemoteError::Unauthorized {
                        server: self.server.clone(),
                        detail: String::new(),
                        fix: if self.creds.is_some() {
                            "the registry refused the credentials; check them (docker login / LORATOOL_REGISTRY_*)".into()
                        } else {
                            "the registry needs credentials: `docker login`, or set LORATOOL_REGISTRY_USERNAME and LORATOOL_REGISTRY_PASSWORD".into()
                        },
                    });
                }
                return Ok(reply);
            }
            let challenge = reply
                .header("www-authenticate")
                .and_then(auth::parse_challenge);
            reply.discard();
            let challenge = challenge.ok_or_else(|| RemoteError::Unauthorized {
                server: self.server.clone(),
                detail: " (no WWW-Authenticate challenge)".into(),
                fix: "the registry refused the request without saying how to authenticate".into(),
            })?;
            let secret = auth::answer(
                &self.http,
                &challenge,
                self.creds.as_ref(),
                &self.scope,
                self.plain_http,
                &self.server,
            )?;
            *self.auth.borrow_mut() = Some(secret);
        }
        // the second round always returns above; answer like a refusal if it ever does not
        Err(RemoteError::Unauthorized {
            server: self.server.clone(),
            detail: String::new(),
            fix: "the registry kept asking for authentication".into(),
        })
    }

    /// Map a non-success status to an error.
    fn fail(&self, reply: Reply, what: &str) -> RemoteError {
        let status = reply.status;
        let url = reply.url.clone();
        let api_version = reply
            .header("docker-distribution-api-version")
            .map(str::to_string);
        let detail = reply
            .bytes(64 << 10)
            .ok()
            .and_then(|b| replies::error_detail(&b));
        let detail_s = detail
            .as_ref()
            .map(|d| format!(" ({})", http::clean_text(d)))
            .unwrap_or_default();
        match status {
            403 => RemoteError::Forbidden {
                server: self.server.clone(),
                detail: detail_s,
                fix: format!("the credentials cannot {what} {}", self.repository),
            },
            404 if api_version.is_none() && detail.is_none() => RemoteError::WrongServer {
                server: self.server.clone(),
                message: format!(
                    "{} answered 404 with no registry error: is this an OCI registry?",
                    http::shown_url(&url)
                ),
            },
            404 => RemoteError::EntryNotFound {
                server: self.server.clone(),
                repo: self.repository.clone(),
                revision: String::new(),
                path: format!("{what}{detail_s}"),
            },
            _ => RemoteError::Status {
                url: http::shown_url(&url),
                status,
                detail: format!(" ({what}){detail_s}"),
            },
        }
    }

    /// Check `/v2/` answers like a registry.
    pub fn ping(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let reply = self.send(&|| Request::get(url.clone()))?;
        let ok = (200..300).contains(&reply.status)
            && reply
                .header("docker-distribution-api-version")
                .is_some_and(|v| v.contains("registry/2.0"))
            || (200..300).contains(&reply.status);
        if ok {
            reply.discard();
            Ok(())
        } else if reply.status == 404 {
            reply.discard();
            Err(RemoteError::WrongServer {
                server: self.server.clone(),
                message: "no /v2/ API: is this an OCI registry?".into(),
            })
        } else {
            Err(self.fail(reply, "reach"))
        }
    }

    pub fn blob_exists(&self, digest: &Digest, size: u64) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let reply = self.send(&|| Request::new(Method::HEAD, url.clone()))?;
        match reply.status {
            200 => {
                let matches = replies::blob_size_matches(reply.header("content-length"), size);
                reply.discard();
                Ok(matches)
            }
            404 => {
                reply.discard();
                Ok(false)
            }
            _ => Err(self.fail(reply, "check blobs of")),
        }
    }

    /// Upload a blob from a file: POST a session, PATCH chunks, PUT with the digest.
    pub fn upload_blob(
        &self,
        file: &File,
        digest: &Digest,
        size: u64,
        chunk: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let start = self.url("blobs/uploads/");
        let reply = self.send(&|| Request::new(Method::POST, start.clone()))?;
        if reply.status != 202 {
            return Err(self.fail(reply, "push to"));
        }
        let mut location = self.location(&reply, &start)?;
        reply.discard();
        let mut offset = 0u64;
        while offset < size {
            let len = chunk.min(size - offset);
            let url = location.clone();
            let range = format!("{}-{}", offset, offset + len - 1);
            let reply = self.send_with(&|| {
                Request::new(Method::PATCH, url.clone())
                    .header("content-type", "application/octet-stream")
                    .header("content-range", range.clone())
                    .body(Body::File { file, offset, len })
            })?;
            if reply.status != 202 {
                return Err(self.fail(reply, "upload a chunk to"));
            }
            location = self.location(&reply, &url)?;
            reply.discard();
            offset += len;
            progress.advance(len);
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!(
            "{location}{sep}digest={}",
            http::quote(digest.as_str(), false)
        );
        let reply = self.send(&|| {
            Request::new(Method::PUT, put.clone())
                .header("content-type", "application/octet-stream")
        })?;
        if reply.status != 201 {
            return Err(self.fail(reply, "finish an upload to"));
        }
        reply.discard();
        Ok(())
    }

    fn location(&self, reply: &Reply, base: &str) -> Result<String> {
        replies::upload_location(base, &self.base, reply.header("location"))
    }

    pub fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Option<String>> {
        let url = self.url(&format!("manifests/{reference}"));
        let body: &[u8] = bytes;
        let reply = self.send_with(&|| {
            Request::new(Method::PUT, url.clone())
                .header("content-type", media_type.to_string())
                .body(Body::Bytes(body))
        })?;
        if reply.status != 201 && reply.status != 200 {
            return Err(self.fail(reply, "push a manifest to"));
        }
        let d = reply.header("docker-content-digest").map(str::to_string);
        reply.discard();
        Ok(d)
    }

    /// Fetch a manifest (capped like the store's), returning its bytes.
    pub fn get_manifest(&self, reference: &str) -> Result<Vec<u8>> {
        let url = self.url(&format!("manifests/{reference}"));
        // distribution 2.8 answers 404 for an OCI manifest unless Accept names its type
        let accept = format!(
            "{MEDIA_TYPE_MANIFEST}, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        );
        let reply = self.send(&|| Request::get(url.clone()).header("accept", accept.clone()))?;
        if reply.status != 200 {
            return Err(self.fail(reply, &format!("read manifest {reference} of")));
        }
        reply.bytes(MAX_MANIFEST_BYTES)
    }

    /// A small blob (the config) into memory, verified.
    pub fn get_small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if size > MAX_MANIFEST_BYTES {
            return Err(RemoteError::Invalid(format!(
                "config blob {digest} is {size} bytes; loratool configs are a few KB"
            )));
        }
        let url = self.url(&format!("blobs/{digest}"));
        let reply = self.send(&|| Request::get(url.clone()))?;
        if reply.status != 200 {
            return Err(self.fail(reply, &format!("read blob {digest} of")));
        }
        let bytes = reply.bytes(size)?;
        if bytes.len() as u64 != size || &Digest::of(&bytes) != digest {
            return Err(RemoteError::integrity(
                &url,
                format!(
                    "blob {digest}: received {} bytes hashing to {}",
                    bytes.len(),
                    Digest::of(&bytes)
                ),
            ));
        }
        Ok(bytes)
    }

    /// Download a blob into `file` and check its size and digest.
    pub fn download_blob(
        &self,
        digest: &Digest,
        size: u64,
        file: &mut File,
        progress: &dyn Progress,
    ) -> Result<()> {
        let url = self.url(&format!("blobs/{digest}"));
        // settle auth with a HEAD first: the download itself cannot answer a challenge midway
        let head = self.send(&|| Request::new(Method::HEAD, url.clone()))?;
        if head.status != 200 {
            return Err(self.fail(head, &format!("read blob {digest} of")));
        }
        head.discard();
        let auth = self.auth.borrow().clone();
        let mut hasher = Hasher::new(None);
        let got =
            self.http
                .download(&url, auth.as_ref(), file, &mut hasher, Some(size), progress)?;
        let (sha, _) = hasher.finish();
        if got != size || sha != digest.hex() {
            return Err(RemoteError::integrity(
                &url,
                format!("blob {digest}: received {got} bytes hashing to sha256:{sha}"),
            ));
        }
        Ok(())
    }
}

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OciPushReport {
    pub reference: String,
    pub digest: String,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub bytes_uploaded: u64,
}

/// Push the stored adapter `reference` to `dest`: blobs the registry lacks, then the manifest
/// bytes exactly as stored, then the tag.
pub fn push(
    store: &Store,
    reference: &Reference,
    dest: &OciRef,
    opts: &OciOptions,
    progress: &dyn Progress,
) -> Result<OciPushReport> {
    let resolved = store.resolve(reference)?;
    let manifest_bytes = store.read_blob(&resolved.digest, MAX_MANIFEST_BYTES)?;
    if Digest::of(&manifest_bytes) != resolved.digest {
        return Err(RemoteError::Invalid(format!(
            "{reference}: the stored manifest does not match its digest; run `loratool verify`"
        )));
    }
    if let OciTarget::Digest(d) = &dest.target {
        if d != &resolved.digest {
            return Err(RemoteError::Invalid(format!(
                "{dest} names digest {d}, but {reference} is {}",
                resolved.digest
            )));
        }
    }
    let client = OciClient::new(dest, opts, true)?;
    client.ping()?;
    let chunk = opts.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES).max(1);
    let m = &resolved.manifest;
    let mut blobs = vec![(
        m.config.checked_digest(store.root())?,
        m.config.size,
        "config".to_string(),
    )];
    for (title, d, size) in m.files() {
        blobs.push((d, size, title));
    }
    let (mut uploaded, mut skipped, mut bytes) = (0, 0, 0u64);
    for (digest, size, title) in &blobs {
        if client.blob_exists(digest, *size)? {
            skipped += 1;
            continue;
        }
        let path = store.blob_path(digest);
        let file = File::open(&path).map_err(|e| RemoteError::io(&path, e))?;
        let actual = file
            .metadata()
            .map_err(|e| RemoteError::io(&path, e))?
            .len();
        if actual != *size {
            return Err(RemoteError::Invalid(format!(
                "{}: {actual} bytes, but the manifest says {size}; run `loratool verify`",
                path.display()
            )));
        }
        progress.start(title, Some(*size));
        let r = client.upload_blob(&file, digest, *size, chunk, progress);
        progress.finish();
        r?;
        uploaded += 1;
        bytes += size;
    }
    let remote_digest = client.put_manifest(dest.reference(), &manifest_bytes, &m.media_type)?;
    if let Some(rd) = remote_digest.filter(|d| d.starts_with("sha256:")) {
        if rd != resolved.digest.as_str() {
            return Err(RemoteError::bad_reply(
                &client.server,
                format!(
                    "the registry stored the manifest as {}, not {}",
                    http::clean_text(&rd),
                    resolved.digest
                ),
            ));
        }
    }
    Ok(OciPushReport {
        reference: dest.to_string(),
        digest: resolved.digest.to_string(),
        blobs_uploaded: uploaded,
        blobs_skipped: skipped,
        bytes_uploaded: bytes,
    })
}

/// What a pull did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OciPullReport {
    pub reference: String,
    pub saved_as: String,
    pub digest: String,
    pub blobs_downloaded: usize,
    pub blobs_present: usize,
}

/// The store tag a pull saves to by default: the repository's last two components and the tag
/// (`oci://h/team/style:v2` -> `team/style:v2`).
pub fn default_save_name(src: &OciRef) -> Result<Reference> {
    let parts: Vec<&str> = src.repository.rsplit('/').take(2).collect();
    let name = parts.iter().rev().copied().collect::<Vec<_>>().join("/");
    let tag = match &src.target {
        OciTarget::Tag(t) => t.clone(),
        OciTarget::Digest(d) => format!("sha256-{}", d.short()),
    };
    Reference::parse(&format!("{name}:{tag}")).map_err(|e| {
        RemoteError::Invalid(format!(
            "cannot name the pulled adapter after {src} ({e}); pass --save name:tag"
        ))
    })
}

/// Pull `src` into `store` as `save_as`: manifest and config checked (ModelPack, loratool's
/// config), every layer downloaded into the store's temp space and verified before it is moved
/// into place, then the tag, annotated with where it came from.
pub fn pull(
    store: &Store,
    src: &OciRef,
    save_as: &Reference,
    opts: &OciOptions,
    progress: &dyn Progress,
) -> Result<OciPullReport> {
    let ref_name = save_as.ref_name().ok_or_else(|| {
        RemoteError::Invalid(format!(
            "--save {save_as}: a pull saves under a tag (name:tag)"
        ))
    })?;
    let client = OciClient::new(src, opts, false)?;
    let manifest_bytes = client.get_manifest(src.reference())?;
    let digest = Digest::of(&manifest_bytes);
    if let OciTarget::Digest(d) = &src.target {
        if d != &digest {
            return Err(RemoteError::integrity(
                &client.url(&format!("manifests/{d}")),
                format!("the manifest received hashes to {digest}"),
            ));
        }
    }
    let shown = std::path::PathBuf::from(src.to_string());
    let probe: serde_json::Value = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        RemoteError::bad_reply(&client.server, format!("manifest is not JSON: {e}"))
    })?;
    let media_type = probe
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if media_type != MEDIA_TYPE_MANIFEST {
        return Err(RemoteError::Invalid(format!(
            "{src} is a '{}', not an OCI image manifest of a loratool adapter",
            http::clean_text(media_type)
        )));
    }
    let manifest = Manifest::parse(&shown, &manifest_bytes)?;
    if manifest.config.media_type != MEDIA_TYPE_MODEL_CONFIG {
        return Err(RemoteError::Invalid(format!(
            "{src} has config type '{}', not a ModelPack model config ({MEDIA_TYPE_MODEL_CONFIG}): loratool pulls adapters pushed from a loratool store",
            http::clean_text(&manifest.config.media_type)
        )));
    }
    let config_digest = manifest.config.checked_digest(&shown)?;
    let config_bytes = client.get_small_blob(&config_digest, manifest.config.size)?;
    ModelConfig::parse(&shown, &config_bytes)?;
    // every layer is downloaded and verified into the store's temp space before any is moved
    // into place, so a failure leaves nothing behind (the temp files go with `staged`)
    let (mut staged, mut present) = (Vec::new(), 0);
    for (title, d, size) in manifest.files() {
        if store.has_blob(&d, size) || staged.iter().any(|(_, s)| s == &d) {
            present += 1;
            continue;
        }
        let mut tmp = store.blob_temp()?;
        progress.start(&title, Some(size));
        let r = client.download_blob(&d, size, tmp.file_mut(), progress);
        progress.finish();
        r?;
        staged.push((tmp, d));
    }
    let downloaded = staged.len();
    for (tmp, d) in staged {
        store.install_blob(tmp, &d)?;
    }
    store.write_blob_bytes(&config_bytes)?;
    store.write_blob_bytes(&manifest_bytes)?;
    let mut annotations = indexmap::IndexMap::new();
    annotations.insert(ANNOTATION_SOURCE.to_string(), src.pinned(&digest));
    store.tag_manifest(
        &ref_name,
        &digest,
        &manifest,
        manifest_bytes.len() as u64,
        annotations,
    )?;
    Ok(OciPullReport {
        reference: src.to_string(),
        saved_as: ref_name,
        digest: digest.to_string(),
        blobs_downloaded: downloaded,
        blobs_present: present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = OciRef::parse("oci://registry.example:5000/team/style:v2").unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert_eq!(r.repository, "team/style");
        assert_eq!(r.target, OciTarget::Tag("v2".into()));
        assert_eq!(r.host(), "registry.example");
        assert_eq!(r.to_string(), "oci://registry.example:5000/team/style:v2");
        let l = OciRef::parse("oci://localhost/a").unwrap();
        assert_eq!(l.target, OciTarget::Tag("latest".into()));
        let d = format!("oci://h/a/b@sha256:{}", "0".repeat(64));
        assert!(matches!(
            OciRef::parse(&d).unwrap().target,
            OciTarget::Digest(_)
        ));
        let v6 = OciRef::parse("oci://[::1]:5000/a:t").unwrap();
        assert_eq!(v6.host(), "::1");
        for bad in [
            "oci://h",
            "oci://h/A",
            "oci://h/a:b/c:",
            "oci://h/a@sha256:xyz",
            "oci://h:x/a",
            "oci://h/a..b",
        ] {
            assert!(OciRef::parse(bad).is_err(), "{bad}");
        }
        assert!(OciRef::parse("oci://h/a__b/c--d:t").is_ok());
    }

    #[test]
    fn plain_http_only_for_loopback_or_when_asked() {
        let opts = OciOptions::default();
        let c = |s: &str, o: &OciOptions| {
            OciClient::new(&OciRef::parse(s).unwrap(), o, false)
                .unwrap()
                .base
        };
        assert!(c("oci://registry.example/a:b", &opts).starts_with("https://"));
        assert!(c("oci://127.0.0.1:5000/a:b", &opts).starts_with("http://"));
        assert!(c("oci://[::1]:5000/a:b", &opts).starts_with("http://"));
        let plain = OciOptions {
            plain_http: true,
            ..OciOptions::default()
        };
        assert!(c("oci://registry.example/a:b", &plain).starts_with("http://"));
    }

    #[test]
    fn default_names_come_from_the_last_two_components() {
        let r = OciRef::parse("oci://h:1/org/team/style:v2").unwrap();
        assert_eq!(default_save_name(&r).unwrap().to_string(), "team/style:v2");
    }
}
