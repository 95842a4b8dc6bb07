//! A per-process scratch directory on tmpfs (`/dev/shm`, or `$LORATOOL_FUZZ_TMP`) for readers
//! that take paths and for round-trip outputs. Emptied before and after every input; the
//! directories of fuzzing processes that have exited are removed when the next one starts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub struct Scratch {
    dir: PathBuf,
}

const PREFIX: &str = "loratool-fuzz-";

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

fn base() -> PathBuf {
    if let Some(d) = std::env::var_os("LORATOOL_FUZZ_TMP") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Remove the scratch directories of processes that no longer run.
fn remove_dead(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Scratch {
    pub fn get() -> &'static Scratch {
        SCRATCH.get_or_init(|| {
            let base = base();
            remove_dead(&base);
            let dir = base.join(format!("{PREFIX}{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the scratch directory");
            Scratch { dir }
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Write `bytes` to `rel` (parent directories created).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("scratch subdirectory");
        }
        std::fs::write(&p, bytes).expect("write the input to the scratch directory");
        p
    }

    /// Names in `rel` (a directory), sorted; empty if it does not exist.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn clear(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}
