//! A model on disk seen through canonical tensor names, whatever its layout, so bake and extract
//! share one naming:
//!
//! - a Hugging Face model directory (`model.safetensors`, or shards with an index): names as
//!   stored;
//! - a diffusers pipeline directory: each component (`unet/`, `text_encoder/`, `text_encoder_2/`,
//!   ...) is a model directory, and canonical names carry the component (`unet.down_blocks...`),
//!   as diffusers LoRA files and loratool's SD tables name modules;
//! - a single-file SD1.5/SDXL checkpoint: ldm/SGM names, mapped through `formats/sd15.tsv` and
//!   `formats/sdxl.tsv`; SDXL text encoder 2's fused `in_proj_weight` is three row blocks
//!   (q, k, v), one per canonical module;
//! - any other safetensors file: names as stored.
//!
//! Precision variants of a component (`diffusion_pytorch_model.fp16.safetensors` beside
//! `diffusion_pytorch_model.safetensors`) are the same model in other dtypes, so they are listed
//! together and a bake changes each of them.

use crate::error::{Error, Result};
use crate::formats::sd::{self, SdTable};
use crate::io::model::INDEX_FILE;
use crate::io::{TensorInfo, TensorStore};
use crate::tensor::Tensor;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The weight-file stems transformers and diffusers write.
const STEMS: [&str; 2] = ["model", "diffusion_pytorch_model"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutKind {
    /// A Hugging Face model directory.
    ModelDir,
    /// A diffusers pipeline directory.
    Pipeline,
    /// A single-file SD checkpoint of this family (`sd15`, `sdxl`).
    Checkpoint(&'static str),
    /// A safetensors file whose names are used as they are.
    File,
}

impl LayoutKind {
    pub fn describe(self) -> String {
        match self {
            LayoutKind::ModelDir => "Hugging Face model directory".into(),
            LayoutKind::Pipeline => "diffusers pipeline directory".into(),
            LayoutKind::Checkpoint(f) => format!("single-file {f} checkpoint"),
            LayoutKind::File => "safetensors file".into(),
        }
    }
}

/// One copy of a component's weights: a single file, or shards with their index.
pub struct WeightSet {
    /// The file (or the index), relative to the model root.
    pub rel: PathBuf,
    pub store: TensorStore,
}

/// Part of a model with its own weights: the whole model, or one pipeline component.
pub struct Component {
    /// `""` for a whole model, else the pipeline subdirectory (`unet`).
    pub name: String,
    /// The primary weights first, then precision variants.
    pub sets: Vec<WeightSet>,
}

impl Component {
    fn primary(&self) -> &TensorStore {
        &self.sets[0].store
    }
}

/// Where one canonical tensor lives: a tensor of a component, or a block of its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub component: usize,
    pub name: String,
    pub rows: Option<Range<usize>>,
}

/// One canonical tensor of the model, for walking all of them.
pub struct LogicalTensor {
    pub canonical: String,
    pub location: Location,
    /// False for tensors a LoRA of this layout cannot target (checkpoint tensors outside the
    /// SD tables: VAE, norms, embeddings).
    pub lora_target: bool,
}

pub struct ModelLayout {
    /// The directory (or the file) opened.
    pub path: PathBuf,
    /// The directory other files are copied from (the checkpoint's own for a file).
    pub root: PathBuf,
    pub kind: LayoutKind,
    pub components: Vec<Component>,
    /// The SD family of a checkpoint or of a pipeline whose modules fit one of loratool's SD
    /// tables.
    pub family: Option<&'static str>,
    /// Safetensors files found but not recognised as weights of the model (copied unchanged).
    pub ignored: Vec<PathBuf>,
}

impl ModelLayout {
    /// Open a model directory, a pipeline directory, an index, or a safetensors file.
    pub fn open(path: &Path) -> Result<ModelLayout> {
        if path.is_dir() {
            return Self::open_dir(path);
        }
        if path.file_name().and_then(|n| n.to_str()) == Some(INDEX_FILE) {
            let store = TensorStore::open_index(path)?;
            let root = store.root().to_path_buf();
            return Ok(ModelLayout {
                path: path.to_path_buf(),
                root,
                kind: LayoutKind::ModelDir,
                components: vec![Component {
                    name: String::new(),
                    sets: vec![WeightSet {
                        rel: PathBuf::from(INDEX_FILE),
                        store,
                    }],
                }],
                family: None,
                ignored: Vec::new(),
            });
        }
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
        if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["ckpt", "pt", "pth", "bin"].contains(&e))
        {
            return Err(Error::malformed(
                path,
                "a pickle checkpoint; loratool reads safetensors only (pickles can run code when loaded): convert it to .safetensors first",
            ));
        }
        let store = TensorStore::open_file(path)?;
        let family = checkpoint_family(path, &store)?;
        let kind = family.map_or(LayoutKind::File, LayoutKind::Checkpoint);
        let rel = PathBuf::from(path.file_name().unwrap_or_default());
        Ok(ModelLayout {
            path: path.to_path_buf(),
            root: store.root().to_path_buf(),
            kind,
            components: vec![Component {
                name: String::new(),
                sets: vec![WeightSet { rel, store }],
            }],
            family,
            ignored: Vec::new(),
        })
    }

    fn open_dir(dir: &Path) -> Result<ModelLayout> {
        let (sets, ignored) = weight_sets(dir, Path::new(""))?;
        if !sets.is_empty() {
            return Ok(ModelLayout {
                path: dir.to_path_buf(),
                root: dir.to_path_buf(),
                kind: LayoutKind::ModelDir,
                components: vec![Component {
                    name: String::new(),
                    sets,
                }],
                family: None,
                ignored,
            });
        }
        let mut components = Vec::new();
        let mut ignored = ignored;
        let mut subdirs: Vec<PathBuf> = read_dir_sorted(dir)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        subdirs.retain(|p| p.file_name().is_none_or(|n| n != ".git"));
        for sub in subdirs {
            let Some(name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let (sets, more) = weight_sets(&sub, Path::new(&name))?;
            ignored.extend(more);
            if !sets.is_empty() {
                components.push(Component { name, sets });
            }
        }
        if components.is_empty() {
            return Err(Error::malformed(
                dir,
                "neither a model directory (model.safetensors or model.safetensors.index.json) nor a diffusers pipeline (unet/, text_encoder/, ... with safetensors weights)",
            ));
        }
        let mut layout = ModelLayout {
            path: dir.to_path_buf(),
            root: dir.to_path_buf(),
            kind: LayoutKind::Pipeline,
            components,
            family: None,
            ignored,
        };
        // the table most of whose modules the pipeline has, with their shapes
        layout.family = sd::FAMILIES
            .iter()
            .filter_map(|&f| {
                let table = sd::table(f)?;
                let n = table
                    .rows
                    .iter()
                    .filter(|r| {
                        layout
                            .locate(&format!("{}.weight", r.canonical))
                            .ok()
                            .and_then(|l| layout.shape(&l))
                            .is_some_and(|s| row_fits(r, &s))
                    })
                    .count();
                (n > 0).then_some((n, f))
            })
            .max()
            .map(|(_, f)| f);
        Ok(layout)
    }

    fn table(&self) -> Option<&'static SdTable> {
        self.family.and_then(sd::table)
    }

    /// Where the canonical tensor `canonical` (`<module path>.weight`) lives, or why it cannot.
    pub fn locate(&self, canonical: &str) -> std::result::Result<Location, String> {
        match self.kind {
            LayoutKind::ModelDir | LayoutKind::File => Ok(Location {
                component: 0,
                name: canonical.to_string(),
                rows: None,
            }),
            LayoutKind::Pipeline => {
                let (head, rest) = canonical.split_once('.').unwrap_or((canonical, ""));
                match self.components.iter().position(|c| c.name == head) {
                    Some(component) if !rest.is_empty() => Ok(Location {
                        component,
                        name: rest.to_string(),
                        rows: None,
                    }),
                    _ => Err(format!(
                        "{canonical} names no component of the pipeline (it has {})",
                        self.component_names()
                    )),
                }
            }
            LayoutKind::Checkpoint(family) => {
                let table = self
                    .table()
                    .ok_or_else(|| format!("no table for {family}"))?;
                let (module, param) = canonical
                    .rsplit_once('.')
                    .ok_or_else(|| format!("{canonical} is not a module tensor"))?;
                let row = table.by_canonical(module).ok_or_else(|| {
                    format!("{module} is not a module of loratool's {family} table")
                })?;
                if param != "weight" && param != "bias" {
                    return Err(format!(
                        "{canonical}: only weights and biases map to {family} checkpoint names"
                    ));
                }
                Ok(match fused_part(&row.ldm) {
                    Some((stem, part)) => Location {
                        component: 0,
                        name: format!("{stem}_{param}"),
                        rows: Some(part * row.out..(part + 1) * row.out),
                    },
                    None => Location {
                        component: 0,
                        name: format!("{}.{param}", row.ldm),
                        rows: None,
                    },
                })
            }
        }
    }

    fn component_names(&self) -> String {
        self.components
            .iter()
            .map(|c| format!("{}/", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the model stores its projections as transformers' `Conv1D` (`[in, out]`, PEFT's
    /// `fan_in_fan_out`): GPT-2 and GPT-1, by `model_type` in `config.json`.
    pub fn uses_conv1d(&self) -> bool {
        if !matches!(self.kind, LayoutKind::ModelDir | LayoutKind::File) {
            return false;
        }
        let Ok(text) = std::fs::read_to_string(self.root.join("config.json")) else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("model_type")?.as_str().map(str::to_string))
            .is_some_and(|t| t == "gpt2" || t == "openai-gpt")
    }

    /// The stored tensor behind a location (primary weights).
    pub fn info(&self, loc: &Location) -> Option<&TensorInfo> {
        self.components
            .get(loc.component)?
            .primary()
            .info(&loc.name)
    }

    /// The shape of the located tensor or row block, if the model has it.
    pub fn shape(&self, loc: &Location) -> Option<Vec<usize>> {
        let info = self.info(loc)?;
        let mut shape = info.shape.clone();
        if let Some(r) = &loc.rows {
            if shape.is_empty() || r.end > shape[0] {
                return None;
            }
            shape[0] = r.len();
        }
        Some(shape)
    }

    /// A location as a user reads it: `unet/down_blocks.0...weight`, or with its row block.
    pub fn display(&self, loc: &Location) -> String {
        let comp = &self.components[loc.component].name;
        let mut s = if comp.is_empty() {
            loc.name.clone()
        } else {
            format!("{comp}/{}", loc.name)
        };
        if let Some(r) = &loc.rows {
            s.push_str(&format!(" rows {}..{}", r.start, r.end));
        }
        s
    }

    /// The located tensor (row block) and its raw bytes' range inside `tensor.bytes()`.
    pub fn tensor(&self, loc: &Location) -> Result<(Tensor, Range<usize>)> {
        let store = self.components[loc.component].primary();
        let t = store.tensor(&loc.name)?;
        let bytes = match &loc.rows {
            None => 0..t.byte_len(),
            Some(r) => {
                let row_bytes = t.byte_len() / t.shape().first().copied().unwrap_or(1).max(1);
                r.start * row_bytes..r.end * row_bytes
            }
        };
        if bytes.end > t.byte_len() {
            return Err(Error::bad_tensor(
                store.root(),
                &loc.name,
                format!("row block {:?} is outside the tensor", loc.rows),
            ));
        }
        Ok((t, bytes))
    }

    /// Drop the located tensor's pages (best effort).
    pub fn release(&self, loc: &Location) {
        let store = self.components[loc.component].primary();
        if let Some(f) = store.file_of(&loc.name) {
            f.release(&loc.name);
        }
    }

    /// Every canonical tensor of the model's primary weights.
    pub fn logical_tensors(&self) -> Vec<LogicalTensor> {
        let mut out = Vec::new();
        let table_pipeline = self.table().filter(|_| self.kind == LayoutKind::Pipeline);
        if let (Some(table), LayoutKind::Checkpoint(_)) = (self.table(), self.kind) {
            let store = self.components[0].primary();
            let mut covered = BTreeSet::new();
            for row in &table.rows {
                let canonical = format!("{}.weight", row.canonical);
                if let Ok(location) = self.locate(&canonical) {
                    if store.info(&location.name).is_some() {
                        covered.insert(location.name.clone());
                        out.push(LogicalTensor {
                            canonical,
                            location,
                            lora_target: true,
                        });
                    }
                }
            }
            for name in store.names().filter(|n| !covered.contains(*n)) {
                out.push(LogicalTensor {
                    canonical: name.to_string(),
                    location: Location {
                        component: 0,
                        name: name.to_string(),
                        rows: None,
                    },
                    lora_target: false,
                });
            }
            return out;
        }
        for (i, c) in self.components.iter().enumerate() {
            for name in c.primary().names() {
                let shape = c.primary().info(name).map(|i| i.shape.as_slice());
                let canonical = if c.name.is_empty() {
                    name.to_string()
                } else {
                    format!("{}.{name}", c.name)
                };
                // a pipeline of a known family: the table's modules only (kohya and diffusers
                // LoRA files cannot name anything else)
                let lora_target = table_pipeline.is_none_or(|t| {
                    canonical
                        .strip_suffix(".weight")
                        .and_then(|m| t.by_canonical(m))
                        .is_some_and(|r| shape.is_some_and(|s| row_fits(r, s)))
                });
                out.push(LogicalTensor {
                    canonical,
                    location: Location {
                        component: i,
                        name: name.to_string(),
                        rows: None,
                    },
                    lora_target,
                });
            }
        }
        out
    }

    /// Bytes of every weight file (all sets), for progress bars.
    pub fn weight_bytes(&self) -> u64 {
        self.components
            .iter()
            .flat_map(|c| &c.sets)
            .map(|s| s.store.total_file_bytes())
            .sum()
    }

    /// Bytes of the primary weight files (what extract reads).
    pub fn primary_bytes(&self) -> u64 {
        self.components
            .iter()
            .map(|c| c.primary().total_file_bytes())
            .sum()
    }

    /// Every weight file of every set, as absolute paths.
    pub fn weight_files(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for c in &self.components {
            for s in &c.sets {
                out.insert(self.root.join(&s.rel));
                for f in s.store.files() {
                    out.insert(f.path().to_path_buf());
                }
            }
        }
        out
    }
}

/// A stored weight of `shape` is what the table row describes (a linear layer may be stored as a
/// 1×1 convolution).
fn row_fits(row: &sd::ModuleRow, shape: &[usize]) -> bool {
    match row.kind {
        crate::adapter::LayerKind::Conv => shape == [row.out, row.in_, row.kh, row.kw],
        _ => shape == [row.out, row.in_] || shape == [row.out, row.in_, 1, 1],
    }
}

/// `...attn.in_proj#k` → (`...attn.in_proj`, 1).
fn fused_part(ldm: &str) -> Option<(&str, usize)> {
    let (stem, part) = ldm.rsplit_once('#')?;
    let i = ["q", "k", "v"].iter().position(|p| *p == part)?;
    Some((stem, i))
}

/// The SD family of a single-file checkpoint, or None for another kind of file.
fn checkpoint_family(path: &Path, store: &TensorStore) -> Result<Option<&'static str>> {
    let has = |prefix: &str| store.names().any(|n| n.starts_with(prefix));
    if !has("model.diffusion_model.") {
        return Ok(None);
    }
    if has("cond_stage_model.model.") {
        return Err(Error::malformed(
            path,
            "an SD 2.x checkpoint (OpenCLIP text encoder); loratool maps SD1.5 and SDXL checkpoints only",
        ));
    }
    if has("conditioner.") || has("model.diffusion_model.label_emb.") {
        Ok(Some("sdxl"))
    } else {
        Ok(Some("sd15"))
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        v.push(e.map_err(|e| Error::io(dir, e))?.path());
    }
    v.sort();
    Ok(v)
}

/// The weight sets of one directory: `<stem>.safetensors` or `<stem>.safetensors.index.json`
/// for a known stem, then their `<stem>.<variant>.` forms; other safetensors files are returned
/// as ignored. `rel` is the directory relative to the model root.
fn weight_sets(dir: &Path, rel: &Path) -> Result<(Vec<WeightSet>, Vec<PathBuf>)> {
    let files: Vec<PathBuf> = read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    let name_of = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    };
    // (stem, variant, is index)
    let classify = |name: &str| -> Option<(&'static str, Option<String>, bool)> {
        let (base, index) = match name.strip_suffix(".safetensors.index.json") {
            Some(b) => (b, true),
            None => (name.strip_suffix(".safetensors")?, false),
        };
        STEMS.iter().find_map(|&stem| {
            if base == stem {
                Some((stem, None, index))
            } else {
                base.strip_prefix(stem)
                    .and_then(|r| r.strip_prefix('.'))
                    .filter(|v| !v.is_empty() && !v.contains('.'))
                    .map(|v| (stem, Some(v.to_string()), index))
            }
        })
    };
    // an index takes precedence over a lone file of the same stem and variant; the primary
    // (variant-less) set comes first; one stem per directory
    let mut keys: Vec<(&'static str, Option<String>, bool, PathBuf)> = files
        .iter()
        .filter_map(|p| classify(&name_of(p)).map(|(s, v, i)| (s, v, i, p.clone())))
        .collect();
    keys.sort_by(|a, b| (a.0, &a.1, !a.2).cmp(&(b.0, &b.1, !b.2)));
    let stem = keys
        .iter()
        .find(|k| k.1.is_none())
        .or(keys.first())
        .map(|k| k.0);
    let mut sets = Vec::new();
    let mut in_sets = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (s, variant, index, p) in keys {
        if Some(s) != stem || !seen.insert(variant.clone()) {
            continue;
        }
        let store = if index {
            TensorStore::open_index(&p)?
        } else {
            TensorStore::open_file(&p)?
        };
        in_sets.insert(p.clone());
        for f in store.files() {
            in_sets.insert(f.path().to_path_buf());
        }
        sets.push(WeightSet {
            rel: rel.join(name_of(&p)),
            store,
        });
    }
    let ignored = files
        .into_iter()
        .filter(|p| name_of(p).ends_with(".safetensors") && !in_sets.contains(p))
        .collect();
    Ok((sets, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{write_safetensors, PendingTensor};
    use crate::tensor::DType;

    fn write(path: &Path, names: &[&str]) {
        let t = Tensor::from_f32(vec![2], &[1.0, 2.0], DType::F32).unwrap();
        let pending: Vec<PendingTensor> = names
            .iter()
            .map(|n| PendingTensor::from_tensor(*n, &t))
            .collect();
        write_safetensors(path, &pending, None, &|_| {}).unwrap();
    }

    #[test]
    fn weight_sets_prefer_the_index_then_variants_and_list_strays() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(&d.join("model-00001-of-00001.safetensors"), &["a"]);
        std::fs::write(
            d.join(INDEX_FILE),
            r#"{"weight_map": {"a": "model-00001-of-00001.safetensors"}}"#,
        )
        .unwrap();
        write(&d.join("model.safetensors"), &["stale"]);
        write(&d.join("model.fp16.safetensors"), &["a"]);
        write(&d.join("consolidated.safetensors"), &["other"]);
        let (sets, ignored) = weight_sets(d, Path::new("")).unwrap();
        let rels: Vec<String> = sets.iter().map(|s| s.rel.display().to_string()).collect();
        assert_eq!(rels, [INDEX_FILE, "model.fp16.safetensors"]);
        let ignored: Vec<String> = ignored
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ignored, ["consolidated.safetensors", "model.safetensors"]);
    }

    #[test]
    fn checkpoints_are_told_apart_by_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[&str], Option<&str>); 4] = [
            (&["model.diffusion_model.out.2.weight"], Some("sd15")),
            (
                &[
                    "model.diffusion_model.out.2.weight",
                    "conditioner.embedders.0.x",
                ],
                Some("sdxl"),
            ),
            (&["model.layers.0.weight"], None),
            (
                &[
                    "model.diffusion_model.out.2.weight",
                    "cond_stage_model.model.x",
                ],
                None,
            ),
        ];
        for (i, (names, want)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("{i}.safetensors"));
            write(&p, names);
            match ModelLayout::open(&p) {
                Ok(l) => assert_eq!(l.family, *want, "{names:?}"),
                Err(e) => {
                    assert!(want.is_none() && e.to_string().contains("SD 2.x"), "{e}")
                }
            }
        }
    }

    #[test]
    fn fused_rows_map_to_thirds() {
        assert_eq!(fused_part("a.attn.in_proj#q"), Some(("a.attn.in_proj", 0)));
        assert_eq!(fused_part("a.attn.in_proj#v"), Some(("a.attn.in_proj", 2)));
        assert_eq!(fused_part("a.attn.out_proj"), None);
    }
}
