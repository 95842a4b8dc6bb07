//! What the Hub answers, decoded and validated without the network: the revision info, tree
//! listing pages and their `Link` header, error messages, a file's metadata headers, and the
//! upload replies (preupload modes, the LFS batch with its basic/multipart actions, the commit).
//! The network functions in `mod.rs`, `fetch` and `push` call these; the `hub_replies` fuzz
//! target feeds them hostile bytes. Each parser comes as a `check_*` step on the decoded JSON
//! (what the client calls after its own decoding, which names a non-JSON answer "not a Hub")
//! and a bytes-in function doing both.

use super::super::error::{RemoteError, Result};
use super::super::http::{self, clean_text, decode_json};
use super::cache::{normalize_etag, valid_etag};
use super::{is_commit, is_sha256_hex, safe_repo_path};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /api/models/{repo}/revision/{rev}`: only the commit is used.
#[derive(Clone, Debug, Deserialize)]
pub struct RevisionInfo {
    pub sha: Option<String>,
}

/// The commit of a revision info reply: a 40-hex lowercase SHA-1.
pub fn check_revision(url: &str, info: RevisionInfo) -> Result<String> {
    match info.sha {
        Some(s) if is_commit(&s) => Ok(s),
        other => Err(RemoteError::bad_reply(
            url,
            format!(
                "'sha' is {:?}, not a 40-hex commit",
                other.map(|s| clean_text(&s))
            ),
        )),
    }
}

pub fn revision_sha(url: &str, body: &[u8]) -> Result<String> {
    check_revision(url, decode_json(url, body)?)
}

/// A listing entry of `/tree/{rev}?recursive=true`.
#[derive(Clone, Debug, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LfsInfo {
    pub oid: String,
    pub size: u64,
}

/// One listing page: every path safe inside a repository, every kind a file or directory, every
/// LFS pointer a sha256 of the entry's size (a hostile listing must not name `../x` or `.git`).
pub fn check_tree_page(url: &str, page: Vec<TreeEntry>) -> Result<Vec<TreeEntry>> {
    for e in &page {
        if !safe_repo_path(&e.path) || !matches!(e.kind.as_str(), "file" | "directory") {
            return Err(RemoteError::bad_reply(
                url,
                format!(
                    "tree entry '{}' ({}) is not a safe repository path",
                    clean_text(&e.path),
                    clean_text(&e.kind)
                ),
            ));
        }
        if let Some(l) = &e.lfs {
            if !is_sha256_hex(&l.oid) || l.size != e.size {
                return Err(RemoteError::bad_reply(
                    url,
                    format!("tree entry '{}' has a bad lfs oid or size", e.path),
                ));
            }
        }
    }
    Ok(page)
}

pub fn tree_page(url: &str, body: &[u8]) -> Result<Vec<TreeEntry>> {
    check_tree_page(url, decode_json(url, body)?)
}

/// `<url>; rel="next"` from a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// The message of an error answer: `X-Error-Message`, else the JSON body's `"error"` string,
/// both cut to printable text. (`body` is only read when the header is absent.)
pub fn error_message(header: Option<&str>, body: Option<&[u8]>) -> Option<String> {
    match header {
        Some(m) => Some(clean_text(m)),
        None => body
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(clean_text)),
    }
}

/// The headers of a file's metadata answer (`HEAD /{repo}/resolve/{commit}/{path}`).
#[derive(Clone, Debug, Default)]
pub struct FileHeaders<'a> {
    /// The answer was a redirect (to the CDN): its Content-Length is the redirect's own.
    pub redirect: bool,
    pub x_repo_commit: Option<&'a str>,
    pub x_linked_etag: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub x_linked_size: Option<&'a str>,
    pub content_length: Option<&'a str>,
}

/// What a file's metadata says: its content hash (git SHA-1 or sha256, lowercase hex) and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub etag: String,
    pub size: u64,
}

/// Decode a file's metadata: it must be of `commit`, named by a valid ETag, and sized.
pub fn file_metadata(url: &str, commit: &str, h: &FileHeaders<'_>) -> Result<FileMeta> {
    let etag = h
        .x_linked_etag
        .or(h.etag)
        .map(normalize_etag)
        .unwrap_or_default();
    let size = h
        .x_linked_size
        .or(if h.redirect { None } else { h.content_length })
        .and_then(|s| s.trim().parse::<u64>().ok());
    if h.x_repo_commit != Some(commit) {
        return Err(RemoteError::bad_reply(
            url,
            format!(
                "X-Repo-Commit is {:?}, not the commit {commit} that was asked for",
                h.x_repo_commit.map(clean_text)
            ),
        ));
    }
    if !valid_etag(&etag) {
        return Err(RemoteError::bad_reply(
            url,
            format!(
                "ETag '{}' is neither a git SHA-1 nor a sha256",
                clean_text(&etag)
            ),
        ));
    }
    let size = size.ok_or_else(|| {
        RemoteError::bad_reply(url, "no file size (X-Linked-Size / Content-Length)")
    })?;
    Ok(FileMeta { etag, size })
}

/// One file of a preupload answer: the server decides regular or LFS, and names what it holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mode {
    pub path: String,
    pub upload_mode: String,
    #[serde(default)]
    pub should_ignore: bool,
    #[serde(default)]
    pub oid: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PreuploadReply {
    pub files: Vec<Mode>,
}

/// The modes by path; an upload mode other than `lfs`/`regular` is refused.
pub fn check_preupload(url: &str, r: PreuploadReply) -> Result<BTreeMap<String, Mode>> {
    let mut out = BTreeMap::new();
    for m in r.files {
        if !matches!(m.upload_mode.as_str(), "lfs" | "regular") {
            return Err(RemoteError::bad_reply(
                url,
                format!("uploadMode '{}'", clean_text(&m.upload_mode)),
            ));
        }
        out.insert(m.path.clone(), m);
    }
    Ok(out)
}

pub fn preupload(url: &str, body: &[u8]) -> Result<BTreeMap<String, Mode>> {
    check_preupload(url, decode_json(url, body)?)
}

/// An LFS action: where to send, and the headers the server asks for (for a multipart upload,
/// `chunk_size` and the numbered part URLs).
#[derive(Clone, Debug, Deserialize)]
pub struct Action {
    pub href: String,
    #[serde(default)]
    pub header: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Actions {
    pub upload: Option<Action>,
    pub verify: Option<Action>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BatchObject {
    pub oid: String,
    #[serde(default)]
    pub actions: Option<Actions>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BatchReply {
    #[serde(default)]
    pub transfer: Option<String>,
    pub objects: Vec<BatchObject>,
}

/// Whether `s` is an absolute http(s) URL with a host (what an action may point at: never
/// `file://` or a relative path).
pub fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && http::origin(s).is_some()
}

/// The LFS batch answer: a transfer loratool speaks, and every action's href an http(s) URL.
pub fn check_lfs_batch(url: &str, batch: BatchReply) -> Result<BatchReply> {
    if let Some(t) = batch
        .transfer
        .as_deref()
        .filter(|t| !matches!(*t, "basic" | "multipart"))
    {
        return Err(RemoteError::bad_reply(
            url,
            format!("the server chose the '{}' transfer, which loratool does not speak (it offers basic and multipart)", clean_text(t)),
        ));
    }
    for o in &batch.objects {
        let Some(a) = &o.actions else { continue };
        for action in [&a.upload, &a.verify].into_iter().flatten() {
            if !is_http_url(&action.href) {
                return Err(RemoteError::bad_reply(
                    url,
                    format!(
                        "LFS action for {} points at '{}', not an http(s) URL",
                        clean_text(&o.oid),
                        clean_text(&http::shown_url(&action.href))
                    ),
                ));
            }
        }
    }
    Ok(batch)
}

pub fn lfs_batch(url: &str, body: &[u8]) -> Result<BatchReply> {
    check_lfs_batch(url, decode_json(url, body)?)
}

/// The string and number values of an action's headers (others are not headers).
pub fn header_strings(h: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

/// How an upload action sends a file of `size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// One PUT of the whole file to the action's (presigned) href.
    Basic,
    /// One PUT per part, in order, then a completion POST to the href with the ETags.
    Multipart { chunk_size: u64, parts: Vec<Part> },
}

/// One part of a multipart upload: its number (from 1), URL, and the byte range it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: u64,
    pub url: String,
    pub offset: u64,
    pub len: u64,
}

/// Read an upload action: no `chunk_size` header means basic; otherwise the parts must be
/// numbered 1..=n with n = ceil(size / chunk_size), each an http(s) URL, so they cover the
/// file exactly.
pub fn upload_transfer(up: &Action, size: u64) -> Result<Transfer> {
    let chunk_size = up.header.get("chunk_size").and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let Some(chunk_size) = chunk_size else {
        return Ok(Transfer::Basic);
    };
    let mut numbered: Vec<(u64, String)> = up
        .header
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_str()?.to_string())))
        .collect();
    numbered.sort();
    let expected = size.div_ceil(chunk_size.max(1));
    if chunk_size == 0
        || numbered.len() as u64 != expected
        || numbered
            .iter()
            .enumerate()
            .any(|(i, (n, _))| *n != i as u64 + 1)
    {
        return Err(RemoteError::bad_reply(
            &up.href,
            format!("multipart upload of {size} bytes in chunks of {chunk_size} needs {expected} numbered part URLs, got {}", numbered.len()),
        ));
    }
    if let Some((n, u)) = numbered.iter().find(|(_, u)| !is_http_url(u)) {
        return Err(RemoteError::bad_reply(
            &up.href,
            format!(
                "part {n} URL '{}' is not an http(s) URL",
                clean_text(&http::shown_url(u))
            ),
        ));
    }
    // i < ceil(size / chunk_size), so i * chunk_size < size: no overflow, len >= 1
    let parts = numbered
        .into_iter()
        .enumerate()
        .map(|(i, (number, url))| {
            let offset = i as u64 * chunk_size;
            Part {
                number,
                url,
                offset,
                len: chunk_size.min(size - offset),
            }
        })
        .collect();
    Ok(Transfer::Multipart { chunk_size, parts })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitReply {
    pub commit_url: String,
    pub commit_oid: String,
}

/// The commit's URL (as printable text) and its 40-hex oid.
pub fn check_commit(url: &str, r: CommitReply) -> Result<(String, String)> {
    if !is_commit(&r.commit_oid) {
        return Err(RemoteError::bad_reply(
            url,
            "commitOid is not a 40-hex commit",
        ));
    }
    Ok((clean_text(&r.commit_url), r.commit_oid))
}

pub fn commit_reply(url: &str, body: &[u8]) -> Result<(String, String)> {
    check_commit(url, decode_json(url, body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://hub.example/api/models/o/r";
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn bad_reply(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(RemoteError::BadReply { message, .. }) => message,
            other => panic!("expected a bad reply, got {other:?}"),
        }
    }

    #[test]
    fn revision_info_needs_a_lowercase_40_hex_sha() {
        let ok = format!(r#"{{"id":"o/r","sha":"{SHA}","siblings":[]}}"#);
        assert_eq!(revision_sha(URL, ok.as_bytes()).unwrap(), SHA);
        for body in [
            r#"{"sha":null}"#.to_string(),
            r#"{}"#.to_string(),
            format!(r#"{{"sha":"{}"}}"#, SHA.to_uppercase()),
            format!(r#"{{"sha":"{}"}}"#, &SHA[..39]),
            format!(r#"{{"sha":"{}g"}}"#, &SHA[..39]),
        ] {
            assert!(
                bad_reply(revision_sha(URL, body.as_bytes())).contains("40-hex"),
                "{body}"
            );
        }
        // wrong type, not JSON
        assert!(bad_reply(revision_sha(URL, br#"{"sha":12}"#)).contains("not the JSON"));
        assert!(bad_reply(revision_sha(URL, b"<html>")).contains("not the JSON"));
    }

    #[test]
    fn tree_pages_refuse_unsafe_paths_kinds_and_lfs_pointers() {
        let oid = "c".repeat(64);
        let ok = format!(
            r#"[{{"type":"file","path":"a/b.safetensors","size":10,"lfs":{{"oid":"{oid}","size":10}}}},
               {{"type":"directory","path":"a"}}]"#
        );
        let page = tree_page(URL, ok.as_bytes()).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!((page[0].size, page[1].size), (10, 0));
        for (body, why) in [
            (r#"[{"type":"file","path":"../x"}]"#.to_string(), "safe"),
            (r#"[{"type":"file","path":".git/config"}]"#.into(), "safe"),
            (r#"[{"type":"file","path":"a//b"}]"#.into(), "safe"),
            (r#"[{"type":"file","path":"/etc/passwd"}]"#.into(), "safe"),
            (r#"[{"type":"file","path":"a\\b"}]"#.into(), "safe"),
            (r#"[{"type":"symlink","path":"a"}]"#.into(), "safe"),
            (
                format!(
                    r#"[{{"type":"file","path":"a","size":9,"lfs":{{"oid":"{oid}","size":10}}}}]"#
                ),
                "lfs",
            ),
            (
                r#"[{"type":"file","path":"a","size":1,"lfs":{"oid":"xyz","size":1}}]"#.into(),
                "lfs",
            ),
        ] {
            assert!(
                bad_reply(tree_page(URL, body.as_bytes())).contains(why),
                "{body}"
            );
        }
        // negative and beyond-u64 sizes are not numbers a size can hold
        for body in [
            r#"[{"type":"file","path":"a","size":-1}]"#,
            r#"[{"type":"file","path":"a","size":18446744073709551616}]"#,
            r#"[{"type":"file","path":"a","size":"10"}]"#,
        ] {
            assert!(bad_reply(tree_page(URL, body.as_bytes())).contains("not the JSON"));
        }
    }

    #[test]
    fn link_header_next_page() {
        assert_eq!(
            next_link("<http://h/api/x?cursor=2>; rel=\"next\"").as_deref(),
            Some("http://h/api/x?cursor=2")
        );
        assert_eq!(
            next_link("<http://h/p>; rel=\"prev\", <http://h/n>; rel=\"next\"").as_deref(),
            Some("http://h/n")
        );
        assert_eq!(next_link("<http://h/a>; rel=\"prev\""), None);
        assert_eq!(next_link("no parameters"), None);
    }

    #[test]
    fn error_messages_come_from_the_header_else_the_body() {
        assert_eq!(
            error_message(Some("Repo\nnot found"), Some(br#"{"error":"x"}"#)).as_deref(),
            Some("Repo?not found")
        );
        assert_eq!(
            error_message(None, Some(br#"{"error":"Invalid token"}"#)).as_deref(),
            Some("Invalid token")
        );
        assert_eq!(error_message(None, Some(br#"{"error":5}"#)), None);
        assert_eq!(error_message(None, Some(b"<html>")), None);
        assert_eq!(error_message(None, None), None);
        let long = "e".repeat(1000);
        let m = error_message(Some(&long), None).unwrap();
        assert_eq!(m.len(), 303); // 300 characters and "..."
    }

    #[test]
    fn file_metadata_of_regular_and_lfs_files() {
        let lfs_oid = "c".repeat(64);
        let regular = FileHeaders {
            x_repo_commit: Some(SHA),
            etag: Some("W/\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""),
            content_length: Some("618"),
            ..Default::default()
        };
        assert_eq!(
            file_metadata(URL, SHA, &regular).unwrap(),
            FileMeta {
                etag: "a".repeat(40),
                size: 618
            }
        );
        // a redirect to the CDN: X-Linked-* name the file, the redirect's Content-Length is not its size
        let quoted = format!("\"{lfs_oid}\"");
        let lfs = FileHeaders {
            redirect: true,
            x_repo_commit: Some(SHA),
            x_linked_etag: Some(&quoted),
            etag: Some("\"0000000000000000000000000000000000000000\""),
            x_linked_size: Some("8864"),
            content_length: Some("1354"),
        };
        assert_eq!(
            file_metadata(URL, SHA, &lfs).unwrap(),
            FileMeta {
                etag: lfs_oid.clone(),
                size: 8864
            }
        );
        let no_size = FileHeaders {
            x_linked_size: None,
            ..lfs.clone()
        };
        assert!(bad_reply(file_metadata(URL, SHA, &no_size)).contains("no file size"));
        for (h, why) in [
            (
                FileHeaders {
                    x_repo_commit: None,
                    ..regular.clone()
                },
                "X-Repo-Commit",
            ),
            (
                FileHeaders {
                    x_repo_commit: Some("1111111111111111111111111111111111111111"),
                    ..regular.clone()
                },
                "X-Repo-Commit",
            ),
            (
                FileHeaders {
                    etag: Some("\"../../etc\""),
                    ..regular.clone()
                },
                "ETag",
            ),
            (
                FileHeaders {
                    etag: None,
                    ..regular.clone()
                },
                "ETag",
            ),
            (
                FileHeaders {
                    content_length: Some("-1"),
                    ..regular.clone()
                },
                "no file size",
            ),
            (
                FileHeaders {
                    content_length: Some("18446744073709551616"),
                    ..regular.clone()
                },
                "no file size",
            ),
        ] {
            assert!(
                bad_reply(file_metadata(URL, SHA, &h)).contains(why),
                "{h:?}"
            );
        }
    }

    #[test]
    fn preupload_modes() {
        let body = br#"{"files":[{"path":"a.safetensors","uploadMode":"lfs","shouldIgnore":false},
            {"path":"README.md","uploadMode":"regular","oid":"ee"}],"commitOid":"x"}"#;
        let m = preupload(URL, body).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["a.safetensors"].upload_mode, "lfs");
        assert_eq!(m["README.md"].oid.as_deref(), Some("ee"));
        assert!(!m["README.md"].should_ignore);
        let xet = br#"{"files":[{"path":"a","uploadMode":"xet"}]}"#;
        assert!(bad_reply(preupload(URL, xet)).contains("uploadMode 'xet'"));
        let wrong_type = br#"{"files":[{"path":"a","uploadMode":"lfs","shouldIgnore":"no"}]}"#;
        assert!(bad_reply(preupload(URL, wrong_type)).contains("not the JSON"));
    }

    fn action(href: &str, header: serde_json::Value) -> Action {
        serde_json::from_value(serde_json::json!({"href": href, "header": header})).unwrap()
    }

    #[test]
    fn lfs_batch_transfers_and_hrefs() {
        let body = br#"{"transfer":"basic","objects":[
            {"oid":"o1","actions":{"upload":{"href":"https://cdn.example/u?sig=1"},
                                   "verify":{"href":"https://hub.example/v","header":{"Authorization":"Basic eA=="}}}},
            {"oid":"o2"},
            {"oid":"o3","error":{"code":422,"message":"bad oid"}}]}"#;
        let b = lfs_batch(URL, body).unwrap();
        assert_eq!(b.objects.len(), 3);
        assert!(b.objects[1].actions.is_none());
        assert!(b.objects[2].error.is_some());
        let tus = br#"{"transfer":"tus","objects":[]}"#;
        assert!(bad_reply(lfs_batch(URL, tus)).contains("'tus' transfer"));
        for href in [
            "file:///etc/passwd",
            "/relative/path",
            "ftp://h/x",
            "http://",
            "",
        ] {
            let body =
                serde_json::json!({"objects":[{"oid":"o","actions":{"upload":{"href":href}}}]});
            let body = serde_json::to_vec(&body).unwrap();
            assert!(
                bad_reply(lfs_batch(URL, &body)).contains("not an http(s) URL"),
                "{href}"
            );
        }
        let verify_file = br#"{"objects":[{"oid":"o","actions":{"verify":{"href":"file:///x"}}}]}"#;
        assert!(bad_reply(lfs_batch(URL, verify_file)).contains("not an http(s) URL"));
        let h = action(
            "https://x",
            serde_json::json!({"a": "s", "b": 5, "c": null, "d": [1]}),
        );
        assert_eq!(
            header_strings(&h.header),
            vec![("a".into(), "s".into()), ("b".into(), "5".into())]
        );
    }

    #[test]
    fn multipart_parts_cover_the_file_exactly() {
        assert_eq!(
            upload_transfer(&action("https://c/u", serde_json::json!({})), 10).unwrap(),
            Transfer::Basic
        );
        // 2500 bytes in chunks of 1000: 0..1000, 1000..2000, 2000..2500
        let up = action(
            "https://c/done",
            serde_json::json!({"chunk_size": "1000", "2": "https://c/p2", "1": "https://c/p1", "3": "http://c/p3"}),
        );
        let part = |number: u64, url: &str, offset: u64, len: u64| Part {
            number,
            url: url.into(),
            offset,
            len,
        };
        assert_eq!(
            upload_transfer(&up, 2500).unwrap(),
            Transfer::Multipart {
                chunk_size: 1000,
                parts: vec![
                    part(1, "https://c/p1", 0, 1000),
                    part(2, "https://c/p2", 1000, 1000),
                    part(3, "http://c/p3", 2000, 500)
                ]
            }
        );
        // a numeric chunk_size works the same; 3000 bytes need exactly 3 full parts
        let up3 = action(
            "https://c/done",
            serde_json::json!({"chunk_size": 1000, "1": "https://c/p1", "2": "https://c/p2", "3": "https://c/p3"}),
        );
        match upload_transfer(&up3, 3000).unwrap() {
            Transfer::Multipart { parts, .. } => {
                assert_eq!(parts.iter().map(|p| p.len).collect::<Vec<_>>(), [1000; 3])
            }
            t => panic!("{t:?}"),
        }
        for (header, size) in [
            // too few and too many parts for the size
            (
                serde_json::json!({"chunk_size": "1000", "1": "https://c/1"}),
                2500,
            ),
            (
                serde_json::json!({"chunk_size": "1000", "1": "https://c/1", "2": "https://c/2"}),
                1000,
            ),
            // numbering with a gap, a duplicate number
            (
                serde_json::json!({"chunk_size": "1000", "1": "https://c/1", "3": "https://c/3"}),
                2000,
            ),
            (
                serde_json::json!({"chunk_size": "1000", "1": "https://c/1", "01": "https://c/2"}),
                2000,
            ),
            // zero chunk, a huge size the parts cannot cover
            (
                serde_json::json!({"chunk_size": "0", "1": "https://c/1"}),
                1,
            ),
            (
                serde_json::json!({"chunk_size": "1", "1": "https://c/1"}),
                u64::MAX,
            ),
            // a part URL that is not a string
            (serde_json::json!({"chunk_size": "1000", "1": 5}), 1000),
        ] {
            let up = action("https://c/done", header.clone());
            assert!(
                bad_reply(upload_transfer(&up, size)).contains("numbered part URLs"),
                "{header}"
            );
        }
        let file_part = action(
            "https://c/done",
            serde_json::json!({"chunk_size": "1000", "1": "file:///etc/shadow"}),
        );
        assert!(bad_reply(upload_transfer(&file_part, 1000)).contains("not an http(s) URL"));
        // a negative chunk size is no chunk size: basic
        let negative = action("https://c/u", serde_json::json!({"chunk_size": -5}));
        assert_eq!(upload_transfer(&negative, 10).unwrap(), Transfer::Basic);
    }

    #[test]
    fn commit_reply_needs_a_commit_oid() {
        let ok = format!(
            r#"{{"commitUrl":"https://hub.example/o/r/commit/{SHA}","commitOid":"{SHA}"}}"#
        );
        assert_eq!(
            commit_reply(URL, ok.as_bytes()).unwrap(),
            (
                format!("https://hub.example/o/r/commit/{SHA}"),
                SHA.to_string()
            )
        );
        let bad = r#"{"commitUrl":"u","commitOid":"main"}"#;
        assert!(bad_reply(commit_reply(URL, bad.as_bytes())).contains("commitOid"));
        assert!(bad_reply(commit_reply(URL, br#"{"commitOid":"x"}"#)).contains("not the JSON"));
    }
}
