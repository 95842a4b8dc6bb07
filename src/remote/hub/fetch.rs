//! Fetching an adapter from the Hub into the huggingface_hub cache: resolve the revision to a
//! commit, list it, pick the adapter's files (a PEFT folder, or one weight file), download what
//! the cache lacks (verified: size, and the sha256 / git SHA-1 the Hub names the file by), and
//! return the local path inside the snapshot. `HF_HUB_OFFLINE` answers from the cache alone.

use super::super::error::{RemoteError, Result};
use super::super::http::{self, Hasher, Redirects, Request};
use super::super::{LocalAdapter, Progress, Provenance};
use super::cache::HubCache;
use super::replies;
use super::{is_sha256_hex, Ctx, HubClient, HubConfig, HubRef, TreeEntry};
use std::path::{Path, PathBuf};
use ureq::http::Method;

#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// A file (relative to the subfolder) to take instead of choosing.
    pub file: Option<String>,
}

/// Fetch the adapter `r` names into the cache; see the module doc.
pub fn fetch(
    r: &HubRef,
    config: &HubConfig,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<LocalAdapter> {
    let cache = HubCache::new(&config.cache);
    let revision = r.revision_or_main();
    if config.offline {
        return fetch_offline(r, &cache, opts);
    }
    let client = HubClient::new(config.clone())?;
    let commit = client.revision_sha(&r.repo, revision)?;
    let entries = client.tree(&r.repo, &commit)?;
    let files: Vec<&TreeEntry> = entries.iter().filter(|e| e.kind == "file").collect();
    let paths: Vec<String> = files.iter().map(|e| e.path.clone()).collect();
    let chosen = choose(&paths, r, opts)?;
    cache.write_ref(&r.repo, revision, &commit)?;
    let mut local = Vec::new();
    for p in &chosen.files {
        let entry = files
            .iter()
            .find(|e| &e.path == p)
            .ok_or_else(|| RemoteError::Invalid(format!("{p} vanished from the listing")))?;
        local.push(download_file(
            &client, &cache, &r.repo, &commit, entry, progress,
        )?);
    }
    Ok(local_adapter(&cache, r, &commit, chosen, local))
}

fn fetch_offline(r: &HubRef, cache: &HubCache, opts: &FetchOptions) -> Result<LocalAdapter> {
    let revision = r.revision_or_main();
    let commit = cache
        .read_ref(&r.repo, revision)
        .ok_or_else(|| RemoteError::Offline {
            message: format!(
                "{} has no cached revision '{revision}' in {}; unset HF_HUB_OFFLINE to download it",
                r.repo,
                cache.root().display()
            ),
        })?;
    let paths = cache.snapshot_files(&r.repo, &commit);
    if paths.is_empty() {
        return Err(RemoteError::Offline {
            message: format!(
                "{}@{commit} has no cached files in {}; unset HF_HUB_OFFLINE to download it",
                r.repo,
                cache.root().display()
            ),
        });
    }
    let chosen = choose(&paths, r, opts)?;
    let local = chosen
        .files
        .iter()
        .map(|p| cache.snapshot_dir(&r.repo, &commit).join(p))
        .collect();
    Ok(local_adapter(cache, r, &commit, chosen, local))
}

fn local_adapter(
    cache: &HubCache,
    r: &HubRef,
    commit: &str,
    chosen: Chosen,
    files: Vec<PathBuf>,
) -> LocalAdapter {
    let snap = cache.snapshot_dir(&r.repo, commit);
    let path = if chosen.dir_adapter {
        if chosen.root.is_empty() {
            snap
        } else {
            snap.join(&chosen.root)
        }
    } else {
        files.first().cloned().unwrap_or(snap)
    };
    let pinned = HubRef {
        repo: r.repo.clone(),
        revision: Some(commit.to_string()),
        subfolder: (!chosen.root.is_empty()).then(|| chosen.root.clone()),
    };
    let pinned = if chosen.dir_adapter {
        pinned.to_string()
    } else {
        format!(
            "{pinned} --file {}",
            chosen.files[0]
                .strip_prefix(&format!("{}/", chosen.root))
                .unwrap_or(&chosen.files[0])
        )
    };
    LocalAdapter {
        path,
        files,
        provenance: Provenance {
            pinned,
            requested: r.to_string(),
            revision: commit.to_string(),
        },
    }
}

/// The files of one adapter in a listing.
#[derive(Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The folder the adapter lives in (`""` = the repository root).
    pub root: String,
    /// Repository paths to fetch.
    pub files: Vec<String>,
    /// A PEFT folder (read as a directory) rather than one weight file.
    pub dir_adapter: bool,
}

const WEIGHT_EXTENSIONS: [&str; 2] = [".safetensors", ".gguf"];

/// Pick the adapter in `paths` (every file of the revision) that `r` / `opts` name.
pub fn choose(paths: &[String], r: &HubRef, opts: &FetchOptions) -> Result<Chosen> {
    let scope = r.subfolder.clone().unwrap_or_default();
    let under = |p: &str| scope.is_empty() || p.starts_with(&format!("{scope}/"));
    let join = |dir: &str, f: &str| {
        if dir.is_empty() {
            f.to_string()
        } else {
            format!("{dir}/{f}")
        }
    };
    let has = |p: &str| paths.iter().any(|x| x == p);
    let parent = |p: &str| {
        p.rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string())
    };
    let peft = |dir: &str| -> Result<Chosen> {
        let model = join(dir, "adapter_model.safetensors");
        if !has(&model) {
            let what = if has(&join(dir, "adapter_model.bin")) {
                "only adapter_model.bin (a pickle, which loratool does not load: convert it to safetensors)"
            } else {
                "no adapter_model.safetensors"
            };
            return Err(RemoteError::NoAdapter {
                what: format!("{}/{}", r, dir),
                message: format!("adapter_config.json but {what}"),
            });
        }
        Ok(Chosen {
            root: dir.to_string(),
            files: vec![join(dir, "adapter_config.json"), model],
            dir_adapter: true,
        })
    };
    if let Some(file) = &opts.file {
        let p = join(&scope, file.trim_start_matches('/'));
        if !super::safe_repo_path(&p) {
            return Err(RemoteError::Invalid(format!(
                "--file '{file}' is not a path inside the repository"
            )));
        }
        if !has(&p) {
            return Err(RemoteError::EntryNotFound {
                server: String::new(),
                repo: r.repo.clone(),
                revision: r.revision_or_main().to_string(),
                path: p,
            });
        }
        let name = p.rsplit('/').next().unwrap_or(&p);
        if name == "adapter_config.json" || name == "adapter_model.safetensors" {
            return peft(&parent(&p));
        }
        return Ok(Chosen {
            root: parent(&p),
            files: vec![p],
            dir_adapter: false,
        });
    }
    if has(&join(&scope, "adapter_config.json")) {
        return peft(&scope);
    }
    let peft_dirs: Vec<String> = paths
        .iter()
        .filter(|p| under(p) && p.rsplit('/').next() == Some("adapter_config.json"))
        .map(|p| parent(p))
        .collect();
    let in_peft_dir = |p: &str| peft_dirs.iter().any(|d| parent(p) == *d);
    let weight_files: Vec<&String> = paths
        .iter()
        .filter(|p| under(p) && !in_peft_dir(p))
        .filter(|p| WEIGHT_EXTENSIONS.iter().any(|e| p.ends_with(e)))
        .collect();
    let shown = |sub: &str| HubRef {
        subfolder: (!sub.is_empty()).then(|| sub.to_string()),
        ..r.clone()
    };
    let mut candidates: Vec<String> = peft_dirs.iter().map(|d| shown(d).to_string()).collect();
    candidates.extend(weight_files.iter().map(|f| {
        let rel = if scope.is_empty() {
            f.as_str()
        } else {
            &f[scope.len() + 1..]
        };
        format!("{r} --file {rel}")
    }));
    match (peft_dirs.as_slice(), weight_files.as_slice()) {
        ([dir], []) => peft(dir),
        ([], [file]) => Ok(Chosen {
            root: parent(file),
            files: vec![file.to_string()],
            dir_adapter: false,
        }),
        ([], []) => Err(RemoteError::NoAdapter {
            what: r.to_string(),
            message: format!(
                "no adapter_config.json, .safetensors or .gguf file{}",
                if scope.is_empty() {
                    String::new()
                } else {
                    format!(" under {scope}/")
                }
            ),
        }),
        _ => Err(RemoteError::Ambiguous {
            what: r.to_string(),
            candidates,
        }),
    }
}

/// Download one file of a commit into the cache (unless its blob is there), link it into the
/// snapshot, and return the snapshot path.
fn download_file(
    client: &HubClient,
    cache: &HubCache,
    repo: &str,
    commit: &str,
    entry: &TreeEntry,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let path = &entry.path;
    let url = format!(
        "{}/{repo}/resolve/{commit}/{}",
        client.config.endpoint,
        http::quote(path, true)
    );
    let ctx = Ctx {
        path: Some(path),
        ..Ctx::new(repo, commit)
    };
    // metadata: the Hub answers LFS files with a 302 to its CDN carrying X-Linked-*; follow
    // only same-origin redirects (a renamed repo), as huggingface_hub does
    let head = Request::new(Method::HEAD, url.clone())
        .header("accept-encoding", "identity")
        .redirects(Redirects::SameOrigin);
    let reply = client.http().send(&head.auth(client.auth_for(&url)))?;
    let is_redirect = (300..400).contains(&reply.status);
    if !(200..300).contains(&reply.status) && !is_redirect {
        return Err(client.status_error(reply, &ctx));
    }
    let meta = replies::file_metadata(
        &url,
        commit,
        &replies::FileHeaders {
            redirect: is_redirect,
            x_repo_commit: reply.header("x-repo-commit"),
            x_linked_etag: reply.header("x-linked-etag"),
            etag: reply.header("etag"),
            x_linked_size: reply.header("x-linked-size"),
            content_length: reply.header("content-length"),
        },
    );
    reply.discard();
    let replies::FileMeta { etag, size } = meta?;
    // the listing and the metadata must agree
    if size != entry.size {
        return Err(RemoteError::integrity(
            &url,
            format!(
                "the listing says {} bytes, the file metadata {size}",
                entry.size
            ),
        ));
    }
    if let Some(lfs) = &entry.lfs {
        if lfs.oid != etag {
            return Err(RemoteError::integrity(
                &url,
                format!(
                    "the listing names the LFS object {}, the file metadata {etag}",
                    lfs.oid
                ),
            ));
        }
    }
    let blob = cache.blob_path(repo, &etag);
    if std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size) {
        return cache.link(repo, commit, path, &etag);
    }
    let blobs_dir = blob.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&blobs_dir).map_err(|e| RemoteError::io(&blobs_dir, e))?;
    let _lock = cache.lock_blob(repo, &etag)?;
    if std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size) {
        // another process finished it while we waited for the lock
        return cache.link(repo, commit, path, &etag);
    }
    let partial = blobs_dir.join(format!("{etag}.incomplete"));
    let guard = RemoveOnDrop(partial.clone());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(|e| RemoteError::io(&partial, e))?;
    let git_size = (etag.len() == 40).then_some(size);
    let mut hasher = Hasher::new(git_size);
    // a download killed earlier left a prefix: resume after it (it is hashed with the rest)
    let existing = file.metadata().map(|m| m.len()).unwrap_or(0);
    if existing > size {
        file.set_len(0).map_err(|e| RemoteError::io(&partial, e))?;
    } else if existing > 0 {
        hasher
            .update_from(&mut file)
            .map_err(|e| RemoteError::io(&partial, e))?;
    }
    use std::io::Seek;
    file.seek(std::io::SeekFrom::End(0))
        .map_err(|e| RemoteError::io(&partial, e))?;
    progress.start(path, Some(size));
    progress.advance(hasher.len);
    let auth = client.auth_for(&url);
    let got = client
        .http()
        .download(&url, auth, &mut file, &mut hasher, Some(size), progress);
    progress.finish();
    let got = got.map_err(|e| match e {
        RemoteError::Status { status, .. } => client.status_error_plain(status, &url, &ctx),
        e => e,
    })?;
    let (sha256, git_sha1) = hasher.finish();
    if got != size {
        return Err(RemoteError::integrity(
            &url,
            format!("got {got} bytes, expected {size}"),
        ));
    }
    let actual = if is_sha256_hex(&etag) {
        sha256
    } else {
        git_sha1.unwrap_or_default()
    };
    if actual != etag {
        return Err(RemoteError::integrity(
            &url,
            format!("the content hashes to {actual}, but the Hub names it {etag}"),
        ));
    }
    file.sync_all().map_err(|e| RemoteError::io(&partial, e))?;
    drop(file);
    std::fs::rename(&partial, &blob).map_err(|e| RemoteError::io(&blob, e))?;
    std::mem::forget(guard);
    cache.link(repo, commit, path, &etag)
}

/// Removes a partial download unless disarmed with `mem::forget`.
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl HubClient {
    /// The error for a status seen mid-download (the body is gone by then).
    fn status_error_plain(&self, status: u16, url: &str, ctx: &Ctx<'_>) -> RemoteError {
        match status {
            401 | 403 | 404 => RemoteError::Status {
                url: http::shown_url(url),
                status,
                detail: format!(" while downloading {}", ctx.path.unwrap_or("")),
            },
            _ => RemoteError::Status {
                url: http::shown_url(url),
                status,
                detail: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_peft_root_is_taken_whole() {
        let p = paths(&[
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
        ]);
        let r = HubRef::parse("hf://a/b").unwrap();
        let c = choose(&p, &r, &FetchOptions::default()).unwrap();
        assert!(c.dir_adapter);
        assert_eq!(
            c.files,
            vec!["adapter_config.json", "adapter_model.safetensors"]
        );
    }

    #[test]
    fn several_adapters_are_listed_and_subfolder_or_file_picks() {
        let p = paths(&[
            "one/adapter_config.json",
            "one/adapter_model.safetensors",
            "two/adapter_config.json",
            "two/adapter_model.safetensors",
            "kohya/style.safetensors",
        ]);
        let r = HubRef::parse("hf://a/b").unwrap();
        match choose(&p, &r, &FetchOptions::default()) {
            Err(RemoteError::Ambiguous { candidates, .. }) => {
                assert_eq!(
                    candidates,
                    vec![
                        "hf://a/b/one",
                        "hf://a/b/two",
                        "hf://a/b --file kohya/style.safetensors"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let two = choose(
            &p,
            &HubRef::parse("hf://a/b/two").unwrap(),
            &FetchOptions::default(),
        )
        .unwrap();
        assert_eq!(two.root, "two");
        let k = choose(
            &p,
            &r,
            &FetchOptions {
                file: Some("kohya/style.safetensors".into()),
            },
        )
        .unwrap();
        assert_eq!(k.files, vec!["kohya/style.safetensors"]);
        assert!(!k.dir_adapter);
    }

    #[test]
    fn a_pickle_only_peft_folder_says_so() {
        let p = paths(&["adapter_config.json", "adapter_model.bin"]);
        let e = choose(
            &p,
            &HubRef::parse("hf://a/b").unwrap(),
            &FetchOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pickle"), "{e}");
    }
}
