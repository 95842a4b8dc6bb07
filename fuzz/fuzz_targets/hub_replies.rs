//! The Hub's replies as `remote::hub::replies` decodes them. The first byte picks the parser,
//! the rest is its input: 0 revision info, 1 tree page, 2 `Link` header, 3 error message
//! (header or JSON body), 4 a file's metadata headers (`name: value` lines; the first byte after
//! the selector says whether it was a redirect), 5 preupload, 6 LFS batch (8 bytes of file size
//! first; every upload action's transfer is planned for that size), 7 commit. Nothing panics;
//! what is accepted satisfies the validation the network code relies on.
#![no_main]
use loratool::remote::hub::replies::{self, FileHeaders, Transfer};
use loratool::remote::hub::{is_commit, is_sha256_hex, safe_repo_path};
use loratool_fuzz::run;

const URL: &str = "https://hub.example/api/models/o/r";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn printable(s: &str) {
    assert!(
        s.chars().all(|c| c.is_ascii_graphic() || c == ' ') && s.len() <= 303,
        "{s:?} is not cut to printable text"
    );
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, _| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(body).ok();
    match which % 8 {
        0 => {
            if let Ok(sha) = replies::revision_sha(URL, body) {
                assert!(is_commit(&sha), "accepted sha {sha:?}");
            }
        }
        1 => {
            if let Ok(page) = replies::tree_page(URL, body) {
                for e in &page {
                    assert!(safe_repo_path(&e.path), "accepted path {:?}", e.path);
                    assert!(matches!(e.kind.as_str(), "file" | "directory"));
                    if let Some(l) = &e.lfs {
                        assert!(is_sha256_hex(&l.oid) && l.size == e.size);
                    }
                }
            }
        }
        2 => {
            if let Some(next) = text.and_then(replies::next_link) {
                assert!(text.is_some_and(|t| t.contains(next.as_str())));
            }
        }
        3 => {
            if let Some(m) = replies::error_message(text, None) {
                printable(&m);
            }
            if let Some(m) = replies::error_message(None, Some(body)) {
                printable(&m);
            }
        }
        4 => {
            let Some((&flags, rest)) = body.split_first() else {
                return;
            };
            let Ok(rest) = std::str::from_utf8(rest) else {
                return;
            };
            let mut h = FileHeaders {
                redirect: flags & 1 == 1,
                ..FileHeaders::default()
            };
            for line in rest.lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "x-repo-commit" => h.x_repo_commit = Some(v),
                    "x-linked-etag" => h.x_linked_etag = Some(v),
                    "etag" => h.etag = Some(v),
                    "x-linked-size" => h.x_linked_size = Some(v),
                    "content-length" => h.content_length = Some(v),
                    _ => {}
                }
            }
            if let Ok(meta) = replies::file_metadata(URL, COMMIT, &h) {
                assert_eq!(h.x_repo_commit, Some(COMMIT));
                assert!(is_commit(&meta.etag) || is_sha256_hex(&meta.etag));
                let announced =
                    h.x_linked_size
                        .or(if h.redirect { None } else { h.content_length });
                assert_eq!(
                    announced.map(|s| s.trim().parse::<u64>().ok()),
                    Some(Some(meta.size))
                );
            }
        }
        5 => {
            if let Ok(modes) = replies::preupload(URL, body) {
                for (path, m) in &modes {
                    assert_eq!(path, &m.path);
                    assert!(matches!(m.upload_mode.as_str(), "lfs" | "regular"));
                }
            }
        }
        6 => {
            if body.len() < 8 {
                return;
            }
            let (size, body) = body.split_at(8);
            let size = u64::from_le_bytes(size.try_into().unwrap_or_default());
            let Ok(batch) = replies::lfs_batch(URL, body) else {
                return;
            };
            assert!(batch
                .transfer
                .as_deref()
                .is_none_or(|t| matches!(t, "basic" | "multipart")));
            for o in &batch.objects {
                let Some(a) = &o.actions else { continue };
                for act in [&a.upload, &a.verify].into_iter().flatten() {
                    assert!(
                        replies::is_http_url(&act.href),
                        "accepted href {:?}",
                        act.href
                    );
                    let _ = replies::header_strings(&act.header);
                }
                let Some(up) = &a.upload else { continue };
                if let Ok(Transfer::Multipart { chunk_size, parts }) =
                    replies::upload_transfer(up, size)
                {
                    assert!(chunk_size > 0);
                    assert_eq!(parts.len() as u64, size.div_ceil(chunk_size));
                    let mut next = 0u64;
                    for (i, p) in parts.iter().enumerate() {
                        assert_eq!(p.number, i as u64 + 1);
                        assert_eq!(p.offset, next, "parts leave a gap or overlap");
                        assert!(p.len >= 1 && p.len <= chunk_size);
                        assert!(
                            replies::is_http_url(&p.url),
                            "accepted part URL {:?}",
                            p.url
                        );
                        next = p.offset + p.len;
                    }
                    assert_eq!(next, size, "parts do not cover the file exactly");
                }
            }
        }
        _ => {
            if let Ok((url, oid)) = replies::commit_reply(URL, body) {
                assert!(is_commit(&oid));
                printable(&url);
            }
        }
    }
}));
