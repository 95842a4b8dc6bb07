//! The JSON documents of the store: `index.json`, image manifests and loratool's config blob,
//! with the media types they use. Parsing validates every digest before anything uses it.
//!
//! Media types follow the CNCF ModelPack model-spec (`specs-go/v1/mediatype.go` in
//! github.com/modelpack/model-spec, as vendored by cri-o):
//! `ArtifactTypeModelManifest = application/vnd.cncf.model.manifest.v1+json`,
//! `MediaTypeModelConfig = application/vnd.cncf.model.config.v1+json`,
//! `MediaTypeModelWeightRaw = application/vnd.cncf.model.weight.v1.raw` (tensor files) and
//! `MediaTypeModelWeightConfigRaw = application/vnd.cncf.model.weight.config.v1.raw` (files such
//! as `adapter_config.json`). The config blob carries ModelPack's `descriptor`, `config` and
//! `modelfs` sections, plus a `loratool` section with everything loratool records.

use super::error::{RegistryError, Result};
use super::names::Digest;
use crate::adapter::summary::AdapterSummary;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ARTIFACT_TYPE_MODEL: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MEDIA_TYPE_MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
pub const MEDIA_TYPE_WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
pub const MEDIA_TYPE_WEIGHT_CONFIG_RAW: &str = "application/vnd.cncf.model.weight.config.v1.raw";
/// The OCI annotation holding a layer's file name.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// The OCI annotation holding a tag in `index.json` (what `oci:<dir>:<ref>` matches).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// Store documents larger than this are refused rather than read (a manifest of an adapter is
/// a few KB; index.json holds one short entry per tag).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// An OCI content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub annotations: IndexMap<String, String>,
}

impl Descriptor {
    /// The digest, validated; `path` names the document it came from for the error.
    pub fn checked_digest(&self, path: &Path) -> Result<Digest> {
        Digest::parse(&self.digest).ok_or_else(|| {
            RegistryError::corrupt(
                path,
                format!(
                    "'{}' is not a sha256 digest",
                    self.digest.chars().take(80).collect::<String>()
                ),
            )
        })
    }
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(|s| s.as_str())
    }
}

/// `index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_string()),
            manifests: Vec::new(),
        }
    }
}

impl Index {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Index> {
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::corrupt(path, format!("not an OCI index: {e}")))?;
        if index.schema_version != 2 {
            return Err(RegistryError::corrupt(
                path,
                format!("schemaVersion {} (expected 2)", index.schema_version),
            ));
        }
        for d in &index.manifests {
            d.checked_digest(path)?;
        }
        Ok(index)
    }
}

/// An OCI image manifest holding one adapter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub annotations: IndexMap<String, String>,
}

impl Manifest {
    /// Parse and validate: schema 2, the image-manifest media type, every digest well formed,
    /// every layer titled with a plain relative file name.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::corrupt(path, format!("not an OCI image manifest: {e}")))?;
        if m.schema_version != 2 || m.media_type != MEDIA_TYPE_MANIFEST {
            return Err(RegistryError::corrupt(
                path,
                format!(
                    "schemaVersion {} / mediaType {} (expected 2 / {MEDIA_TYPE_MANIFEST})",
                    m.schema_version, m.media_type
                ),
            ));
        }
        m.config.checked_digest(path)?;
        for l in &m.layers {
            l.checked_digest(path)?;
            let title = l.annotation(ANNOTATION_TITLE).unwrap_or("");
            if !is_plain_file_name(title) {
                return Err(RegistryError::corrupt(
                    path,
                    format!(
                        "layer {} has title '{title}', not a plain file name",
                        l.digest
                    ),
                ));
            }
        }
        Ok(m)
    }

    /// `(title, digest, size)` of every layer (validated by [`Manifest::parse`]).
    pub fn files(&self) -> Vec<(String, Digest, u64)> {
        self.layers
            .iter()
            .filter_map(|l| {
                Some((
                    l.annotation(ANNOTATION_TITLE)?.to_string(),
                    Digest::parse(&l.digest)?,
                    l.size,
                ))
            })
            .collect()
    }
}

/// A file name without directories, `..` or control characters: the only kind of layer title
/// loratool writes out, so a hostile manifest cannot make `export` write outside its directory.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(|c| c.is_control())
}

/// Where an adapter came from: the operation that made it and its inputs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Lineage {
    /// `add`, `convert`, `resize`, `merge`, `quantize`.
    pub operation: String,
    /// A one-line summary, e.g. `merge(sum, weights 0.7/0.3)`.
    pub summary: String,
    /// The operation's parameters as given.
    #[serde(default)]
    pub parameters: IndexMap<String, serde_json::Value>,
    #[serde(default)]
    pub inputs: Vec<LineageInput>,
}

/// One input of an operation: a stored manifest (with the reference it was read as) or a
/// file outside the store (with the sha256 of its bytes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LineageInput {
    /// `manifest` (digest of a stored manifest) or `files` (sha256 over the input's files).
    pub kind: String,
    pub digest: String,
    /// The reference or path the input was given as.
    pub source: String,
}

/// loratool's own section of the config blob.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdapterInfo {
    pub format: String,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub ranks: Vec<usize>,
    #[serde(default)]
    pub alphas: Vec<f64>,
    #[serde(default)]
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub dtypes: Vec<String>,
    #[serde(default)]
    pub modules: usize,
    #[serde(default)]
    pub parameters: u64,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub lineage: Option<Lineage>,
    /// The full description `info` prints (absent in stores written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<AdapterSummary>,
}

impl AdapterInfo {
    /// The record of an adapter described by `summary`, created now.
    pub fn from_summary(summary: AdapterSummary, lineage: Option<Lineage>) -> AdapterInfo {
        AdapterInfo {
            format: summary.format.to_string(),
            base_model: summary.base_model.clone(),
            family: summary.family.clone(),
            ranks: summary.ranks.iter().map(|g| g.rank).collect(),
            alphas: summary.alphas(),
            target_modules: summary.targets.keys().cloned().collect(),
            dtypes: summary.dtypes.iter().map(|d| d.dtype.clone()).collect(),
            modules: summary.modules,
            parameters: summary.params,
            created: super::now_rfc3339(),
            lineage,
            summary: Some(summary),
        }
    }
}

/// The config blob: ModelPack's sections (`descriptor`, `config`, `modelfs`) and loratool's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelConfig {
    pub descriptor: serde_json::Value,
    pub config: serde_json::Value,
    pub modelfs: serde_json::Value,
    pub loratool: AdapterInfo,
}

impl ModelConfig {
    pub fn new(name: &str, info: AdapterInfo, layer_digests: &[Digest]) -> ModelConfig {
        let descriptor = serde_json::json!({
            "createdAt": info.created,
            "name": name,
            "family": info.family,
        });
        let config = serde_json::json!({
            "format": info.format,
            "paramSize": info.parameters.to_string(),
            "precision": info.dtypes.join(","),
        });
        // raw layers are uncompressed, so each diff id is the layer's own digest
        let modelfs = serde_json::json!({
            "type": "layers",
            "diffIds": layer_digests.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        });
        ModelConfig {
            descriptor,
            config,
            modelfs,
            loratool: info,
        }
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<ModelConfig> {
        serde_json::from_slice(bytes)
            .map_err(|e| RegistryError::corrupt(path, format!("not a loratool model config: {e}")))
    }
}
