//! What a push sends: the files of a stored adapter or of a path, optionally converted to
//! another format first, with the metadata the model card and commit message need.

use super::error::{RemoteError, Result};
use crate::adapter::detect::{detect_format, read_adapter};
use crate::adapter::{Format, ReadOptions};
use crate::registry::manifest::AdapterInfo;
use crate::registry::{adapter_files, describe, Digest, Reference, SourceFile, Store};
use std::path::{Path, PathBuf};

/// The adapter a push takes.
pub enum PushInput<'a> {
    Stored {
        store: &'a Store,
        reference: Reference,
    },
    Path(PathBuf),
}

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
    _keep: Vec<tempfile::TempDir>,
}

/// Gather the files of `input`, converted to `to` when given and different.
pub fn prepare(input: PushInput<'_>, to: Option<Format>) -> Result<Prepared> {
    let mut keep = Vec::new();
    let (path, format, stored_info, stored, source) = match input {
        PushInput::Stored { store, reference } => {
            let resolved = store.resolve(&reference)?;
            let m = store.materialise(&resolved)?;
            let format = m.format.ok_or_else(|| {
                RemoteError::Invalid(format!(
                    "{reference}: the store does not record a format loratool can push ('{}')",
                    resolved.config.loratool.format
                ))
            })?;
            let path = m.read_path.clone();
            keep.push(m.dir);
            (
                path,
                format,
                Some(resolved.config.loratool.clone()),
                Some((reference.to_string(), resolved.digest.clone())),
                reference.to_string(),
            )
        }
        PushInput::Path(p) => {
            let format = detect_format(&p)?;
            let shown = p.display().to_string();
            (p, format, None, None, shown)
        }
    };
    let target = to.unwrap_or(format);
    // the files go up as they are unless converted: reading them only describes them for the
    // card, so a file loratool cannot read alone (a llama GGUF adapter needs its base model to
    // undo the q/k permutation) is still pushed, with what the store recorded
    let adapter = match read_adapter(&path, Some(format), ReadOptions { skip_unknown: true }) {
        Ok(a) => Some(a),
        Err(_) if target == format => None,
        Err(e) => return Err(e.into()),
    };
    let license = adapter.as_ref().and_then(|a| {
        ["modelspec.license", "ss_license", "license"]
            .iter()
            .find_map(|k| a.meta.source_metadata.get(*k).cloned())
            .filter(|l| !l.trim().is_empty())
    });
    let mut info = match &adapter {
        Some(a) => describe(a, target),
        None => stored_info.clone().unwrap_or_else(|| AdapterInfo {
            format: format.name().to_string(),
            ..AdapterInfo::default()
        }),
    };
    if let Some(s) = &stored_info {
        info.lineage = s.lineage.clone();
        info.created = s.created.clone();
        if info.base_model.is_none() {
            info.base_model = s.base_model.clone();
        }
    }
    let (files_path, format) = if target != format {
        let dir = tempfile::Builder::new()
            .prefix("loratool-push-")
            .tempdir()
            .map_err(|e| RemoteError::io(std::env::temp_dir(), e))?;
        let out = match target {
            Format::Peft => dir.path().to_path_buf(),
            Format::Diffusers => dir.path().join("pytorch_lora_weights.safetensors"),
            Format::Kohya => dir.path().join(format!("{}.safetensors", file_stem(&source))),
            Format::Gguf => {
                return Err(RemoteError::Invalid(
                    "pushing with --to gguf needs the base model's config; convert first with `loratool convert <adapter> --to gguf --base <config.json|model.gguf> -o x.gguf --save name:tag` and push that".into(),
                ))
            }
        };
        let none = |_: u64| {};
        let Some(adapter) = &adapter else {
            return Err(RemoteError::Invalid(format!(
                "{source}: cannot read it to convert"
            )));
        };
        match target {
            Format::Peft => crate::adapter::peft::write(adapter, &out, &none)?,
            Format::Diffusers => crate::adapter::diffusers::write(adapter, &out, &none)?,
            _ => crate::adapter::kohya::write(adapter, &out, &none)?,
        };
        keep.push(dir);
        (out, target)
    } else {
        (path, format)
    };
    drop(adapter);
    let files = adapter_files(&files_path, format)?;
    Ok(Prepared {
        files,
        format,
        info,
        license,
        stored,
        source,
        _keep: keep,
    })
}

/// A file name stem from a reference (`acme/style:v2` -> `style`) or a path.
fn file_stem(source: &str) -> String {
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
