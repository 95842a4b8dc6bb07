//! What a push sends: files under their repository names, with the metadata the model card and
//! commit message need. The application layer gathers them (`app::remote`).

use crate::adapter::Format;
use crate::registry::manifest::AdapterInfo;
use crate::registry::{Digest, SourceFile};
use std::path::Path;

/// Files ready to upload, and what is known about them.
pub struct Prepared {
    /// Files under the names they get in the repository (plain file names).
    pub files: Vec<SourceFile>,
    pub format: Format,
    pub info: AdapterInfo,
    /// `modelspec.license` or similar from the file's own metadata.
    pub license: Option<String>,
    /// The store reference and manifest digest, when the input came from the store.
    pub stored: Option<(String, Digest)>,
    /// What the input was given as (reference or path).
    pub source: String,
    /// Temp directories the files live in (kept until the push is done).
    pub keep: Vec<tempfile::TempDir>,
}

/// A file name stem from a reference (`acme/style:v2` -> `style`) or a path.
pub fn file_stem(source: &str) -> String {
    let base = source
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(source)
        .split([':', '@'])
        .next()
        .unwrap_or("adapter");
    let base = Path::new(base)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("adapter");
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() {
        "adapter".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stems() {
        assert_eq!(super::file_stem("acme/style:v2"), "style");
        assert_eq!(super::file_stem("/x/y/my lora.safetensors"), "mylora");
    }
}
