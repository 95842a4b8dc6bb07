//! A set of safetensors files seen as one tensor map: a single file, or a sharded model
//! (`model.safetensors.index.json` naming a shard per tensor).

use crate::error::{Error, Result};
use crate::io::safetensors::{SafetensorsFile, TensorInfo};
use crate::tensor::Tensor;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "model.safetensors.index.json";

pub struct TensorStore {
    root: PathBuf,
    files: Vec<SafetensorsFile>,
    /// tensor name → index into `files`
    entries: IndexMap<String, usize>,
}

impl TensorStore {
    /// Open a `.safetensors` file, a `model.safetensors.index.json`, or a directory holding
    /// either (`model.safetensors.index.json` first, then `model.safetensors`).
    pub fn open(path: &Path) -> Result<TensorStore> {
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join("model.safetensors");
            if single.is_file() {
                return Self::open_file(&single);
            }
            return Err(Error::malformed(
                path,
                format!("directory has neither {INDEX_FILE} nor model.safetensors"),
            ));
        }
        if path.file_name().and_then(|n| n.to_str()) == Some(INDEX_FILE)
            || path.extension().and_then(|e| e.to_str()) == Some("json")
        {
            return Self::open_index(path);
        }
        Self::open_file(path)
    }

    pub fn open_file(path: &Path) -> Result<TensorStore> {
        let file = SafetensorsFile::open(path)?;
        let entries = file.tensors().keys().map(|k| (k.clone(), 0)).collect();
        Ok(TensorStore {
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            files: vec![file],
            entries,
        })
    }

    pub fn open_index(index_path: &Path) -> Result<TensorStore> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(index_path, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::malformed(index_path, "no \"weight_map\" object"))?;
        let root = index_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut shard_ids: IndexMap<String, usize> = IndexMap::new();
        let mut files = Vec::new();
        let mut entries = IndexMap::with_capacity(map.len());
        for (tensor, shard) in map {
            let shard = shard.as_str().ok_or_else(|| {
                Error::malformed(index_path, format!("shard of '{tensor}' is not a string"))
            })?;
            check_shard_name(index_path, shard)?;
            let id = match shard_ids.get(shard) {
                Some(&id) => id,
                None => {
                    files.push(SafetensorsFile::open(&root.join(shard))?);
                    shard_ids.insert(shard.to_string(), files.len() - 1);
                    files.len() - 1
                }
            };
            if files[id].info(tensor).is_none() {
                return Err(Error::malformed(
                    index_path,
                    format!(
                        "index says '{tensor}' is in {shard}, but that shard has no such tensor"
                    ),
                ));
            }
            entries.insert(tensor.clone(), id);
        }
        Ok(TensorStore {
            root,
            files,
            entries,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.entries
            .get(name)
            .and_then(|&i| self.files[i].info(name))
    }
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self.entries.get(name) {
            Some(&i) => self.files[i].tensor(name),
            None => Err(Error::bad_tensor(&self.root, name, "no such tensor")),
        }
    }
    /// The file holding `name`.
    pub fn file_of(&self, name: &str) -> Option<&SafetensorsFile> {
        self.entries.get(name).map(|&i| &self.files[i])
    }
    pub fn total_file_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.file_len()).sum()
    }
}

/// Shard names come from a file we do not trust: plain file names only.
fn check_shard_name(index_path: &Path, shard: &str) -> Result<()> {
    let ok = !shard.is_empty()
        && !shard.contains('/')
        && !shard.contains('\\')
        && shard != "."
        && shard != ".."
        && !shard.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(
            index_path,
            format!("shard name '{shard}' is not a plain file name in the model directory"),
        ))
    }
}
