//! Bake adapters into a safetensors base model, as PEFT's `merge_and_unload` does, streaming one
//! tensor at a time: `W += Σ wᵢ·ΔWᵢ` with `ΔW = s·B·A` (transposed for `fan_in_fan_out`,
//! `(B·A)ᵀ` for embeddings, `B·A` reshaped for convolutions), `bias += s·B.bias`, DoRA and
//! `modules_to_save` as in [`edit`]. Computed in f32, stored in the base tensor's dtype.
//!
//! The base is any [`ModelLayout`]: a model directory, a diffusers pipeline, a single-file SD
//! checkpoint. The output mirrors it: same files, shards, index, metadata and dtypes; files and
//! tensors the adapters do not touch are copied byte for byte.
//!
//! Every adapter module must find its base tensor with the right shape before anything is
//! written. A directory output is built under a temporary name beside it and renamed into place
//! when complete; a file output is written atomically.

mod edit;

use crate::adapter::{LayerKind, LoraLayer};
use crate::error::{Error, Result};
use crate::io::atomic::sync_files;
use crate::io::{write_safetensors, write_safetensors_unsynced, PendingTensor};
use crate::linalg::all_finite;
use crate::ops::model_layout::{LayoutKind, Location, ModelLayout};
use crate::tensor::encode_f32;
use edit::{apply_edits, Edit};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use super::BakeInput;

/// One base tensor the bake changes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChangedTensor {
    /// `component/name` for pipelines.
    pub name: String,
    pub edits: usize,
    pub dtype: String,
}

/// Edits per component, per tensor name.
type Plan<'a> = Vec<BTreeMap<String, Vec<Edit<'a>>>>;

/// The base tensor a layer changes (canonical name) and the shape it must have there.
fn target(layer: &LoraLayer, path: &str, fan_in_fan_out: bool) -> (String, Vec<usize>, bool) {
    let (out, inp) = (layer.out_features(), layer.in_features());
    let name = format!("{path}.weight");
    match layer.kind {
        LayerKind::Embedding => (name, vec![inp, out], true),
        LayerKind::Conv => {
            let (kh, kw) = layer.kernel();
            (name, vec![out, inp, kh, kw], false)
        }
        LayerKind::Linear if fan_in_fan_out => (name, vec![inp, out], true),
        LayerKind::Linear => (name, vec![out, inp], false),
    }
}

/// Equal shapes, or a linear `[o, i]` against a 1×1 convolution `[o, i, 1, 1]` (same bytes;
/// SD 1.x stores `proj_in` as a convolution where later models use a linear layer).
fn shape_fits(want: &[usize], have: &[usize]) -> bool {
    let squeeze = |s: &[usize]| -> Vec<usize> {
        if s.len() == 4 && s[2] == 1 && s[3] == 1 {
            s[..2].to_vec()
        } else {
            s.to_vec()
        }
    };
    want == have || squeeze(want) == squeeze(have)
}

/// Where `canonical` lives in the base, if there with a shape fitting `want` (in every
/// precision variant); else why not, naming `what`.
fn locate_checked(
    layout: &ModelLayout,
    what: &str,
    canonical: &str,
    want: &[usize],
) -> std::result::Result<Location, String> {
    let loc = layout
        .locate(canonical)
        .map_err(|why| format!("{what}: {why}"))?;
    match layout.shape(&loc) {
        Some(have) if shape_fits(want, &have) => {}
        Some(have) => {
            return Err(format!(
                "{what} needs {} of shape {want:?}, the base has {have:?}",
                layout.display(&loc)
            ))
        }
        None => {
            return Err(format!(
                "{what}: the base has no tensor {}",
                layout.display(&loc)
            ))
        }
    }
    let comp = &layout.components[loc.component];
    let shape0 = comp.sets[0].store.info(&loc.name).map(|i| &i.shape);
    for set in &comp.sets[1..] {
        if set.store.info(&loc.name).map(|i| &i.shape) != shape0 {
            return Err(format!(
                "{what}: {} has no {} of the primary weights' shape",
                set.rel.display(),
                loc.name
            ));
        }
    }
    Ok(loc)
}

/// Map every adapter module onto the base, or list every reason it cannot be.
fn plan<'a>(layout: &ModelLayout, inputs: &[BakeInput<'a>]) -> Result<Plan<'a>> {
    let mut plan: Plan<'a> = layout.components.iter().map(|_| BTreeMap::new()).collect();
    let mut problems = Vec::new();
    let check =
        |problems: &mut Vec<String>, label: &str, what: &str, canonical: &str, want: &[usize]| {
            locate_checked(layout, what, canonical, want)
                .map_err(|why| problems.push(format!("{label}: {why}")))
                .ok()
        };
    let mut adds: Vec<(Location, Edit<'a>)> = Vec::new();
    for input in inputs {
        let label = input.label.as_str();
        let fifo = input.adapter.meta.fan_in_fan_out;
        for (path, layer) in &input.adapter.layers {
            let (canonical, want, transpose) =
                target(layer, path, fifo && layer.kind == LayerKind::Linear);
            if let Some(m) = &layer.magnitude {
                if m.numel() != layer.out_features() {
                    problems.push(format!(
                        "{label}: {path}: DoRA magnitude has {} values for {} outputs",
                        m.numel(),
                        layer.out_features()
                    ));
                    continue;
                }
            }
            let Some(loc) = check(&mut problems, label, path, &canonical, &want) else {
                continue;
            };
            let coef = (input.weight * layer.scale()) as f32;
            if layer.bias.is_some() {
                let bias = format!("{path}.bias");
                if let Some(bloc) =
                    check(&mut problems, label, &bias, &bias, &[layer.out_features()])
                {
                    let rows = bloc.rows.clone();
                    adds.push((bloc, Edit::Bias { layer, coef, rows }));
                }
            }
            let rows = loc.rows.clone();
            if transpose && rows.is_some() {
                problems.push(format!(
                    "{label}: {path}: a transposed LoRA cannot target the row block {}",
                    layout.display(&loc)
                ));
                continue;
            }
            adds.push((
                loc,
                Edit::Delta {
                    layer,
                    coef,
                    transpose,
                    rows,
                },
            ));
        }
        for (name, tensor) in &input.adapter.full {
            let what = format!("fully trained tensor {name} (modules_to_save)");
            let Some(loc) = check(&mut problems, label, &what, name, tensor.shape()) else {
                continue;
            };
            if loc.rows.is_some() {
                problems.push(format!(
                    "{label}: {what} maps to a row block of {}; replace the whole tensor instead",
                    layout.display(&loc)
                ));
                continue;
            }
            adds.push((
                loc,
                Edit::Replace {
                    tensor,
                    weight: input.weight as f32,
                },
            ));
        }
    }
    for (loc, e) in adds {
        plan[loc.component].entry(loc.name).or_default().push(e);
    }
    for (c, tensors) in plan.iter().enumerate() {
        for (name, edits) in tensors {
            let replaces = edits
                .iter()
                .filter(|e| matches!(e, Edit::Replace { .. }))
                .count();
            if replaces > 0 && edits.len() > 1 {
                let shown = layout.display(&Location {
                    component: c,
                    name: name.clone(),
                    rows: None,
                });
                problems.push(format!(
                    "{shown}: a fully trained tensor (modules_to_save) replaces it, so no other adapter may change it"
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::BaseMismatch {
            base: format!("{} ({})", layout.path.display(), layout.kind.describe()),
            problems,
        });
    }
    Ok(plan)
}

/// Every reason `adapter`'s modules do not fit `layout` (a missing tensor, a different shape),
/// one line each, found as a bake would find them; empty when every module fits.
pub fn fit_problems(layout: &ModelLayout, adapter: &crate::adapter::Adapter) -> Vec<String> {
    let input = BakeInput {
        label: "adapter".into(),
        adapter,
        weight: 1.0,
    };
    match plan(layout, &[input]) {
        Ok(_) => Vec::new(),
        Err(Error::BaseMismatch { problems, .. }) => problems
            .into_iter()
            .map(|p| p.strip_prefix("adapter: ").map(str::to_string).unwrap_or(p))
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

/// Where a bake's output goes: a new directory for a directory base, a file for a file base.
fn check_output(layout: &ModelLayout, out: &Path) -> Result<()> {
    let dir_base = layout.path.is_dir();
    if dir_base {
        if out.exists()
            && std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .next()
                .is_some()
        {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose a new output directory",
                out.display()
            )));
        }
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if canon(parent).starts_with(canon(&layout.root)) {
            return Err(Error::Invalid(format!(
                "the output {} is inside the base model directory {}; write it elsewhere",
                out.display(),
                layout.root.display()
            )));
        }
    } else if out.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is a directory; a single-file base bakes into a file (-o merged.safetensors)",
            out.display()
        )));
    } else if out.exists() && same_file(out, &layout.path) {
        return Err(Error::Invalid(format!(
            "{} is the base itself; write the baked model to a new file",
            out.display()
        )));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Bake `inputs` into `base`, writing `out` (a directory for a directory base, else a file).
pub fn bake_model(
    base: &ModelLayout,
    inputs: &[BakeInput<'_>],
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<ChangedTensor>> {
    let plan = plan(base, inputs)?;
    check_output(base, out)?;
    let mut changed = Vec::new();
    for (c, tensors) in plan.iter().enumerate() {
        for (name, edits) in tensors {
            let dtype = base.components[c].sets[0]
                .store
                .info(name)
                .map(|i| i.dtype.to_string())
                .unwrap_or_default();
            changed.push(ChangedTensor {
                name: base.display(&Location {
                    component: c,
                    name: name.clone(),
                    rows: None,
                }),
                edits: edits.len(),
                dtype,
            });
        }
    }
    if !base.path.is_dir() {
        let file = &base.components[0].sets[0].store.files()[0];
        write_file(file, &plan[0], out, Durability::Fsync, progress)?;
        return Ok(changed);
    }

    // built in a locked staging directory beside `out` and renamed into place when complete;
    // the staged weight files are made durable together before that rename
    crate::io::staging::write_dir(out, |staging| {
        let mut written = BTreeSet::new();
        let mut unsynced = Vec::new();
        for (c, comp) in base.components.iter().enumerate() {
            for set in &comp.sets {
                for file in set.store.files() {
                    let touched = file.tensors().keys().any(|n| plan[c].contains_key(n));
                    if !touched {
                        continue;
                    }
                    let rel = file
                        .path()
                        .strip_prefix(&base.root)
                        .map_err(|_| {
                            Error::malformed(file.path(), "weight file outside the model directory")
                        })?
                        .to_path_buf();
                    let target = staging.join(&rel);
                    if let Some(f) =
                        write_file(file, &plan[c], &target, Durability::Later, progress)?
                    {
                        unsynced.push((target, f));
                    }
                    written.insert(base.root.join(rel));
                }
            }
        }
        // everything else as it is: configs, tokenizers, indexes, untouched weights and components
        let weights = base.weight_files();
        copy_tree(&base.root, staging, &written, &|p, n| {
            if weights.contains(p) {
                progress(n)
            }
        })?;
        sync_files(&unsynced, staging)
    })?;
    Ok(changed)
}

/// When a written weight file is fsynced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before it is renamed into place (a single-file output).
    Fsync,
    /// By the caller, with the other files of a staging directory: the open file is returned.
    Later,
}

/// Write one weight file with `edits` applied to its tensors; the rest byte for byte. Returns
/// the open file when its fsync is left to the caller.
fn write_file(
    file: &crate::io::SafetensorsFile,
    edits: &BTreeMap<String, Vec<Edit<'_>>>,
    target: &Path,
    durability: Durability,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<std::fs::File>> {
    let mut pending = Vec::with_capacity(file.tensors().len());
    for (name, info) in file.tensors() {
        let tensor_edits = edits.get(name);
        let shape = info.shape.clone();
        let dtype = info.dtype;
        pending.push(PendingTensor {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            data: Box::new(move || {
                let Some(es) = tensor_edits else {
                    return file.tensor_bytes(name).map(Cow::Borrowed);
                };
                let mut w = file.tensor(name)?.to_f32();
                apply_edits(&mut w, shape.first().copied().unwrap_or(1), es);
                if !all_finite(&w) {
                    return Err(Error::bad_tensor(
                        file.path(),
                        name,
                        "the baked weight has non-finite values",
                    ));
                }
                encode_f32(dtype, &w).map(Cow::Owned).ok_or_else(|| {
                    Error::bad_tensor(
                        file.path(),
                        name,
                        format!("cannot write {dtype} from floats"),
                    )
                })
            }),
            // the input's pages go once written: RSS stays near one tensor
            written: Some(Box::new(move || file.release(name))),
            // untouched bytes are copied file to file by the kernel
            source: if tensor_edits.is_none() {
                file.span(name)
            } else {
                None
            },
        });
    }
    let md = file.metadata();
    let md = (!md.is_empty()).then_some(md);
    Ok(match durability {
        Durability::Fsync => {
            write_safetensors(target, &pending, md, progress)?;
            None
        }
        Durability::Later => Some(write_safetensors_unsynced(target, &pending, md, progress)?.1),
    })
}

/// Copy the directory tree `from` into `to`, except the files in `skip`. Symlinked files are
/// copied as files; symlinked directories and `.git` are left out (they may loop or be huge),
/// and so are loratool's temp entries.
fn copy_tree(
    from: &Path,
    to: &Path,
    skip: &BTreeSet<PathBuf>,
    copied: &dyn Fn(&Path, u64),
) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let p = entry.path();
        let name = entry.file_name();
        let link = entry
            .file_type()
            .map_err(|e| Error::io(&p, e))?
            .is_symlink();
        let dest = to.join(&name);
        if crate::io::staging::is_temp_name(&name) {
            continue; // a temp entry of some writer in the base directory is not model content
        }
        if p.is_dir() {
            if link || name == ".git" {
                continue;
            }
            std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            copy_tree(&p, &dest, skip, copied)?;
        } else if p.is_file() && !skip.contains(&p) && !dest.exists() {
            let n = std::fs::copy(&p, &dest).map_err(|e| Error::io(&p, e))?;
            copied(&p, n);
        }
    }
    Ok(())
}

/// How a base was read, for reports: the layout, and a pipeline's components.
pub fn describe(layout: &ModelLayout) -> String {
    let comps: Vec<String> = layout
        .components
        .iter()
        .filter(|c| !c.name.is_empty())
        .map(|c| {
            if c.sets.len() > 1 {
                format!("{}/ ({} weight sets)", c.name, c.sets.len())
            } else {
                format!("{}/", c.name)
            }
        })
        .collect();
    match layout.kind {
        LayoutKind::Pipeline => format!("{}: {}", layout.kind.describe(), comps.join(", ")),
        k => k.describe(),
    }
}
