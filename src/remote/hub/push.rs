//! Uploading an adapter to the Hub as huggingface_hub does with Xet disabled: create the repo
//! (an existing one is fine), create the branch if needed, preupload (the server decides
//! regular or LFS per file), LFS batch with `basic` or `multipart` transfers and `verify`,
//! then one NDJSON commit. Files whose remote oid already equals the local one are skipped.

use super::super::error::{RemoteError, Result};
use super::super::http::{self, Body, Request};
use super::super::source::Prepared;
use super::super::Progress;
use super::card::{render, CardInput};
use super::replies::{self, Action, Mode, Transfer};
use super::{is_commit, Ctx, HubClient, HubConfig, HubRef, MAX_API_BYTES};
use base64::Engine as _;
use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use ureq::http::Method;

/// Files larger than this are never sent inline in the commit (the Hub refuses them).
const MAX_INLINE_BYTES: u64 = 10 << 20;
const LFS_JSON: &str = "application/vnd.git-lfs+json";

#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    pub private: bool,
    /// Write a model card when the repository has no README.md.
    pub card: bool,
    /// The commit summary; default names the store reference and manifest digest.
    pub message: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    pub repo: String,
    pub revision: String,
    /// `None` when nothing changed (every file already there).
    pub commit_url: Option<String>,
    pub commit_oid: String,
    /// Repository paths sent, and skipped because identical.
    pub uploaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub card_written: bool,
}

/// One file to commit.
struct Upload {
    path_in_repo: String,
    local: PathBuf,
    size: u64,
    sha256: String,
    git_sha1: String,
    /// Inline content (the generated card).
    inline: Option<Vec<u8>>,
}

/// Push `prepared` to `dest`. The adapter's files go into the subfolder when one is given.
pub fn push(
    prepared: &Prepared,
    dest: &HubRef,
    config: &HubConfig,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport> {
    if config.offline {
        return Err(RemoteError::Offline {
            message: "pushing needs the network; unset HF_HUB_OFFLINE".into(),
        });
    }
    let client = HubClient::new(config.clone())?;
    let repo = dest.repo.as_str();
    let revision = dest.revision_or_main();
    let wctx = Ctx {
        write: true,
        ..Ctx::new(repo, revision)
    };
    create_repo(&client, repo, opts.private, &wctx)?;
    let head = ensure_branch(&client, repo, revision, &wctx)?;
    let existing: Vec<String> = client
        .tree(repo, &head)?
        .into_iter()
        .map(|e| e.path)
        .collect();
    let prefix = dest
        .subfolder
        .as_ref()
        .map(|s| format!("{s}/"))
        .unwrap_or_default();
    let mut uploads = Vec::new();
    for f in &prepared.files {
        uploads.push(Upload::from_file(
            format!("{prefix}{}", f.title),
            f.path.clone(),
        )?);
    }
    let mut card_written = false;
    if opts.card && !existing.iter().any(|p| p == "README.md") {
        let stored = prepared
            .stored
            .as_ref()
            .map(|(r, d)| (r.as_str(), d.as_str()));
        let text = render(&CardInput {
            repo,
            format: prepared.format,
            info: &prepared.info,
            license: prepared.license.as_deref(),
            stored,
        });
        uploads.push(Upload::inline("README.md".into(), text.into_bytes()));
        card_written = true;
    }
    // preupload: the server says which files go through LFS, and what it already holds
    let modes = preupload(&client, repo, revision, &uploads, &wctx)?;
    let mut lfs = Vec::new();
    let mut regular = Vec::new();
    let mut unchanged = Vec::new();
    for u in &uploads {
        let m = modes.get(&u.path_in_repo).ok_or_else(|| {
            RemoteError::bad_reply(
                &client.api_url(repo),
                format!("preupload did not answer for {}", u.path_in_repo),
            )
        })?;
        if m.should_ignore {
            unchanged.push(u.path_in_repo.clone());
            continue;
        }
        let is_lfs = m.upload_mode == "lfs" && u.size > 0;
        let local_oid = if is_lfs { &u.sha256 } else { &u.git_sha1 };
        if m.oid.as_deref() == Some(local_oid.as_str()) {
            unchanged.push(u.path_in_repo.clone());
        } else if is_lfs {
            lfs.push(u);
        } else {
            regular.push(u);
        }
    }
    if !lfs.is_empty() {
        upload_lfs(&client, repo, revision, &lfs, &wctx, progress)?;
    }
    let uploaded: Vec<String> = lfs
        .iter()
        .chain(regular.iter())
        .map(|u| u.path_in_repo.clone())
        .collect();
    if uploaded.is_empty() {
        return Ok(PushReport {
            repo: repo.into(),
            revision: revision.into(),
            commit_url: None,
            commit_oid: head,
            uploaded,
            unchanged,
            card_written: false,
        });
    }
    let summary = opts
        .message
        .clone()
        .unwrap_or_else(|| match &prepared.stored {
            Some((r, d)) => format!("loratool push {r} ({d})"),
            None => format!("loratool push {}", prepared.source),
        });
    let description = prepared
        .info
        .lineage
        .as_ref()
        .map(|l| format!("{}: {}", l.operation, l.summary))
        .unwrap_or_default();
    let (url, oid) = commit(
        &client,
        repo,
        revision,
        &summary,
        &description,
        &lfs,
        &regular,
        &wctx,
    )?;
    Ok(PushReport {
        repo: repo.into(),
        revision: revision.into(),
        commit_url: Some(url),
        commit_oid: oid,
        uploaded,
        unchanged,
        card_written,
    })
}

impl Upload {
    fn from_file(path_in_repo: String, local: PathBuf) -> Result<Upload> {
        if !super::safe_repo_path(&path_in_repo) {
            return Err(RemoteError::Invalid(format!(
                "'{path_in_repo}' cannot be a path in a repository"
            )));
        }
        let size = std::fs::metadata(&local)
            .map_err(|e| RemoteError::io(&local, e))?
            .len();
        let mut f = File::open(&local).map_err(|e| RemoteError::io(&local, e))?;
        // the git SHA-1 is only the oid of regular files, which are never over 10 MiB
        let mut h = http::Hasher::new((size <= MAX_INLINE_BYTES).then_some(size));
        h.update_from(&mut f)
            .map_err(|e| RemoteError::io(&local, e))?;
        let (sha256, git) = h.finish();
        Ok(Upload {
            path_in_repo,
            local,
            size,
            sha256,
            git_sha1: git.unwrap_or_default(),
            inline: None,
        })
    }

    fn inline(path_in_repo: String, bytes: Vec<u8>) -> Upload {
        let mut h = http::Hasher::new(Some(bytes.len() as u64));
        h.update(&bytes);
        let (sha256, git) = h.finish();
        Upload {
            path_in_repo,
            local: PathBuf::new(),
            size: bytes.len() as u64,
            sha256,
            git_sha1: git.unwrap_or_default(),
            inline: Some(bytes),
        }
    }

    fn sample(&self) -> Result<Vec<u8>> {
        if let Some(b) = &self.inline {
            return Ok(b[..b.len().min(512)].to_vec());
        }
        use std::io::Read;
        let mut f = File::open(&self.local).map_err(|e| RemoteError::io(&self.local, e))?;
        let mut buf = Vec::with_capacity(512);
        (&mut f)
            .take(512)
            .read_to_end(&mut buf)
            .map_err(|e| RemoteError::io(&self.local, e))?;
        Ok(buf)
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn post_json<'a>(url: String, body: &'a [u8]) -> Request<'a> {
    Request::new(Method::POST, url)
        .header("content-type", "application/json")
        .body(Body::Bytes(body))
}

fn create_repo(client: &HubClient, repo: &str, private: bool, ctx: &Ctx<'_>) -> Result<()> {
    let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
    let mut payload = json!({"name": name, "organization": owner});
    if private {
        payload["visibility"] = json!("private");
    }
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let url = format!("{}/api/repos/create", client.config.endpoint);
    let req = post_json(url, &body).auth(client.auth_for(&client.config.endpoint));
    let reply = client.http().send(&req)?;
    match reply.status {
        200..=299 | 409 => {
            reply.discard();
            Ok(())
        }
        401..=403 => {
            // a token without the create scope may still write to an existing repo
            let err = client.status_error(reply, ctx);
            match client.revision_sha(repo, "main") {
                Ok(_) => Ok(()),
                Err(_) => Err(err),
            }
        }
        _ => Err(client.status_error(reply, ctx)),
    }
}

/// The head commit of `revision`, creating the branch from main when it does not exist.
fn ensure_branch(client: &HubClient, repo: &str, revision: &str, ctx: &Ctx<'_>) -> Result<String> {
    match client.revision_sha(repo, revision) {
        Ok(sha) => Ok(sha),
        Err(RemoteError::RevisionNotFound { .. }) if revision != "main" && !is_commit(revision) => {
            let url = client.api_url(&format!("{repo}/branch/{}", http::quote(revision, false)));
            let body = b"{}";
            client.call(post_json(url, body), ctx)?.discard();
            client.revision_sha(repo, revision)
        }
        Err(e) => Err(e),
    }
}

fn preupload(
    client: &HubClient,
    repo: &str,
    revision: &str,
    uploads: &[Upload],
    ctx: &Ctx<'_>,
) -> Result<BTreeMap<String, Mode>> {
    let mut out = BTreeMap::new();
    for chunk in uploads.chunks(256) {
        let mut files = Vec::new();
        for u in chunk {
            files
                .push(json!({"path": u.path_in_repo, "sample": b64(&u.sample()?), "size": u.size}));
        }
        let body = serde_json::to_vec(&json!({ "files": files })).unwrap_or_default();
        let url = client.api_url(&format!(
            "{repo}/preupload/{}",
            http::quote(revision, false)
        ));
        let reply = client.call(post_json(url.clone(), &body), ctx)?;
        out.extend(replies::check_preupload(
            &url,
            client.json(reply, MAX_API_BYTES)?,
        )?);
    }
    Ok(out)
}

fn upload_lfs(
    client: &HubClient,
    repo: &str,
    revision: &str,
    files: &[&Upload],
    ctx: &Ctx<'_>,
    progress: &dyn Progress,
) -> Result<()> {
    for chunk in files.chunks(256) {
        let objects: Vec<_> = chunk
            .iter()
            .map(|u| json!({"oid": u.sha256, "size": u.size}))
            .collect();
        let body = serde_json::to_vec(&json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects,
            "hash_algo": "sha256",
            "ref": {"name": revision},
        }))
        .unwrap_or_default();
        let url = format!(
            "{}/{repo}.git/info/lfs/objects/batch",
            client.config.endpoint
        );
        let req = Request::new(Method::POST, url.clone())
            .header("accept", LFS_JSON)
            .header("content-type", LFS_JSON)
            .body(Body::Bytes(&body));
        let reply = client.call(req, ctx)?;
        let batch = replies::check_lfs_batch(&url, client.json(reply, MAX_API_BYTES)?)?;
        for u in chunk {
            let obj = batch
                .objects
                .iter()
                .find(|o| o.oid == u.sha256)
                .ok_or_else(|| {
                    RemoteError::bad_reply(&url, format!("no batch answer for {}", u.path_in_repo))
                })?;
            if let Some(e) = &obj.error {
                return Err(RemoteError::bad_reply(
                    &url,
                    format!(
                        "LFS batch refused {}: {}",
                        u.path_in_repo,
                        http::clean_text(&e.to_string())
                    ),
                ));
            }
            let Some(actions) = &obj.actions else {
                continue; // already stored
            };
            if let Some(up) = &actions.upload {
                progress.start(&u.path_in_repo, Some(u.size));
                let r = upload_one(client, u, up, progress);
                progress.finish();
                r?;
            }
            if let Some(v) = &actions.verify {
                let body = serde_json::to_vec(&json!({"oid": u.sha256, "size": u.size}))
                    .unwrap_or_default();
                let mut req = Request::new(Method::POST, v.href.clone())
                    .header("accept", LFS_JSON)
                    .header("content-type", LFS_JSON)
                    .body(Body::Bytes(&body))
                    .auth(client.auth_for(&v.href));
                for (k, val) in replies::header_strings(&v.header) {
                    req.headers.push((leak_header(&k)?, val));
                }
                let reply = client.http().send(&req)?;
                if !(200..300).contains(&reply.status) {
                    return Err(client.status_error(reply, ctx));
                }
                reply.discard();
            }
        }
    }
    Ok(())
}

/// Action headers come from the server; only a few well-formed names are passed on.
fn leak_header(k: &str) -> Result<&'static str> {
    const ALLOWED: [&str; 3] = ["authorization", "x-amz-checksum-sha256", "content-type"];
    let lower = k.to_ascii_lowercase();
    ALLOWED
        .iter()
        .find(|a| **a == lower)
        .copied()
        .ok_or_else(|| {
            RemoteError::Invalid(format!(
                "LFS action header '{}' is not one loratool sends",
                http::clean_text(k)
            ))
        })
}

fn upload_one(client: &HubClient, u: &Upload, up: &Action, progress: &dyn Progress) -> Result<()> {
    let file = File::open(&u.local).map_err(|e| RemoteError::io(&u.local, e))?;
    let parts = match replies::upload_transfer(up, u.size)? {
        Transfer::Multipart { parts, .. } => parts,
        Transfer::Basic => {
            // basic: one PUT of the whole file to a self-authorising (presigned) href, no token
            let req = Request::new(Method::PUT, up.href.clone())
                .body(Body::File {
                    file: &file,
                    offset: 0,
                    len: u.size,
                })
                .upload_progress(progress);
            let reply = client.http().send(&req)?;
            if !(200..300).contains(&reply.status) {
                return Err(RemoteError::Status {
                    url: http::shown_url(&reply.url),
                    status: reply.status,
                    detail: format!(" uploading {}", u.path_in_repo),
                });
            }
            reply.discard();
            return Ok(());
        }
    };
    // multipart: numbered part URLs, one PUT per chunk, then a completion POST with the ETags
    let mut etags = Vec::new();
    for replies::Part {
        number: n,
        url,
        offset,
        len,
    } in &parts
    {
        let (offset, len) = (*offset, *len);
        let req = Request::new(Method::PUT, url.clone()).body(Body::File {
            file: &file,
            offset,
            len,
        });
        let reply = client.http().send(&req)?;
        if !(200..300).contains(&reply.status) {
            return Err(RemoteError::Status {
                url: http::shown_url(&reply.url),
                status: reply.status,
                detail: format!(" uploading part {n} of {}", u.path_in_repo),
            });
        }
        let etag = reply
            .header_text("etag")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                RemoteError::bad_reply(
                    &reply.url,
                    format!("part {n} of {} answered without an ETag", u.path_in_repo),
                )
            })?;
        reply.discard();
        progress.advance(len);
        etags.push(json!({"partNumber": n, "etag": etag}));
    }
    let body = serde_json::to_vec(&json!({"oid": u.sha256, "parts": etags})).unwrap_or_default();
    let req = Request::new(Method::POST, up.href.clone())
        .header("accept", LFS_JSON)
        .header("content-type", LFS_JSON)
        .body(Body::Bytes(&body));
    let reply = client.http().send(&req)?;
    if !(200..300).contains(&reply.status) {
        return Err(RemoteError::Status {
            url: http::shown_url(&reply.url),
            status: reply.status,
            detail: format!(" completing the multipart upload of {}", u.path_in_repo),
        });
    }
    reply.discard();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn commit(
    client: &HubClient,
    repo: &str,
    revision: &str,
    summary: &str,
    description: &str,
    lfs: &[&Upload],
    regular: &[&Upload],
    ctx: &Ctx<'_>,
) -> Result<(String, String)> {
    let mut lines =
        vec![json!({"key": "header", "value": {"summary": summary, "description": description}})];
    for u in regular {
        if u.size > MAX_INLINE_BYTES {
            return Err(RemoteError::Invalid(format!(
                "the server wants {} ({} bytes) sent inline, but the Hub refuses inline files over 10 MiB",
                u.path_in_repo, u.size
            )));
        }
        let content = match &u.inline {
            Some(b) => b.clone(),
            None => std::fs::read(&u.local).map_err(|e| RemoteError::io(&u.local, e))?,
        };
        lines.push(json!({"key": "file", "value": {"content": b64(&content), "path": u.path_in_repo, "encoding": "base64"}}));
    }
    for u in lfs {
        lines.push(json!({"key": "lfsFile", "value": {"path": u.path_in_repo, "algo": "sha256", "oid": u.sha256, "size": u.size}}));
    }
    let mut body = Vec::new();
    for l in &lines {
        body.extend(serde_json::to_vec(l).unwrap_or_default());
        body.push(b'\n');
    }
    let url = client.api_url(&format!("{repo}/commit/{}", http::quote(revision, false)));
    // not retried: a commit whose answer was lost would be made twice
    let req = Request::new(Method::POST, url.clone())
        .header("content-type", "application/x-ndjson")
        .body(Body::Bytes(&body))
        .no_retry();
    let reply = client.call(req, ctx)?;
    replies::check_commit(&url, client.json(reply, MAX_API_BYTES)?)
}
