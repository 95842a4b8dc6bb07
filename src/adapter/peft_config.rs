//! `adapter_config.json`: tolerant parsing, PEFT's rank/alpha pattern resolution, and the
//! config loratool writes.
//!
//! Only `peft_type` is required; every other key falls back to PEFT's default. Pattern keys
//! are matched exactly as PEFT's `get_pattern_key` does: the first key, in file order, for
//! which `(.*\.)?(KEY)$` matches the module path from its start.

use crate::error::{Error, Result};
use indexmap::IndexMap;
use regex::{Regex, RegexBuilder};
use serde_json::Value;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";

/// The PEFT tuner types loratool reads: LoRA, and LoHa/LoKr (converted through
/// `adapter::lycoris`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeftType {
    Lora,
    Loha,
    Lokr,
}

#[derive(Debug, Clone)]
pub struct PeftConfig {
    pub peft_type: PeftType,
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub fan_in_fan_out: bool,
    pub rank_pattern: Vec<(String, Regex, usize)>,
    pub alpha_pattern: Vec<(String, Regex, f64)>,
    pub base_model_name_or_path: Option<String>,
    pub task_type: Option<String>,
    pub modules_to_save: Vec<String>,
    /// `target_modules`, when the config names them.
    pub target_modules: Option<Targets>,
}

/// PEFT's `target_modules`: a list of names (a module matches when its path equals one or
/// ends with `.name`), a regular expression the whole path must match, or `all-linear`
/// (every linear layer but the output head, which only the base model can tell).
#[derive(Debug, Clone)]
pub enum Targets {
    List(Vec<String>),
    Regex(String, Regex),
    AllLinear,
}

impl Targets {
    /// Whether PEFT would put a LoRA layer on `module`; `None` when only the base model can
    /// tell (`all-linear`).
    pub fn matches(&self, module: &str) -> Option<bool> {
        match self {
            Targets::List(names) => Some(
                names
                    .iter()
                    .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            ),
            Targets::Regex(_, re) => Some(re.is_match(module)),
            Targets::AllLinear => None,
        }
    }
}

/// A pattern from a config compiled with a size limit: PEFT patterns name modules and compile to
/// a few KiB, while the 10-byte key `\.{507000}` came near the regex crate's 10 MiB default and
/// allocated 16 MiB (fuzz finding 10).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

fn compile_pattern(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

fn pattern_regex(path: &Path, field: &str, key: &str) -> Result<Regex> {
    compile_pattern(&format!("^(?:.*\\.)?(?:{key})$")).map_err(|e| {
        Error::malformed(
            path,
            format!("{field} key '{key}' is not a regular expression loratool can evaluate: {e}"),
        )
    })
}

impl PeftConfig {
    pub fn read(path: &Path) -> Result<PeftConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::malformed(path, format!("not valid JSON: {e}")))?;
        PeftConfig::from_json(path, &json)
    }

    pub fn from_json(path: &Path, json: &Value) -> Result<PeftConfig> {
        let bad = |m: String| Error::malformed(path, m);
        let obj = json
            .as_object()
            .ok_or_else(|| bad("config is not a JSON object".into()))?;
        let peft_type = match obj.get("peft_type").and_then(|v| v.as_str()) {
            Some(t) if t.eq_ignore_ascii_case("lora") => PeftType::Lora,
            Some(t) if t.eq_ignore_ascii_case("loha") => PeftType::Loha,
            Some(t) if t.eq_ignore_ascii_case("lokr") => PeftType::Lokr,
            Some(t) => {
                return Err(Error::unsupported(
                    path,
                    format!("peft_type is {t}; loratool reads LoRA, LoHa and LoKr adapters only"),
                ))
            }
            None => return Err(bad("no \"peft_type\": not a PEFT adapter config".into())),
        };
        // LoHa/LoKr configs call their alpha "alpha" (LoRA: "lora_alpha"); both default to 8
        let alpha_key = if peft_type == PeftType::Lora {
            "lora_alpha"
        } else {
            "alpha"
        };
        let num = |key: &str, default: f64| -> Result<f64> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("\"{key}\" is not a number: {v}"))),
            }
        };
        let flag = |key: &str| obj.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
        let string = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(|s| s.to_string());
        let r = num("r", 8.0)?;
        if r < 1.0 || r.fract() != 0.0 {
            return Err(bad(format!("\"r\" must be a positive integer, got {r}")));
        }
        let mut rank_pattern = Vec::new();
        if let Some(Value::Object(m)) = obj.get("rank_pattern") {
            for (k, v) in m {
                let rank = v
                    .as_u64()
                    .filter(|&x| x > 0)
                    .ok_or_else(|| bad(format!("rank_pattern['{k}'] is not a positive integer")))?;
                rank_pattern.push((
                    k.clone(),
                    pattern_regex(path, "rank_pattern", k)?,
                    rank as usize,
                ));
            }
        }
        let mut alpha_pattern = Vec::new();
        if let Some(Value::Object(m)) = obj.get("alpha_pattern") {
            for (k, v) in m {
                let alpha = v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("alpha_pattern['{k}'] is not a number")))?;
                alpha_pattern.push((k.clone(), pattern_regex(path, "alpha_pattern", k)?, alpha));
            }
        }
        let modules_to_save = match obj.get("modules_to_save") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(|s| s.to_string()))
                .collect(),
            _ => Vec::new(),
        };
        let target_modules = match obj.get("target_modules") {
            Some(Value::String(t)) if t == "all-linear" => Some(Targets::AllLinear),
            Some(Value::String(t)) => Some(Targets::Regex(
                t.clone(),
                compile_pattern(&format!("^(?:{t})$")).map_err(|e| {
                    bad(format!(
                        "target_modules '{t}' is not a regular expression loratool can evaluate: {e}"
                    ))
                })?,
            )),
            Some(Value::Array(a)) => Some(Targets::List(
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| s.to_string()))
                    .collect(),
            )),
            _ => None,
        };
        Ok(PeftConfig {
            target_modules,
            peft_type,
            r: r as usize,
            lora_alpha: num(alpha_key, 8.0)?,
            use_rslora: flag("use_rslora"),
            use_dora: flag("use_dora"),
            fan_in_fan_out: flag("fan_in_fan_out"),
            rank_pattern,
            alpha_pattern,
            base_model_name_or_path: string("base_model_name_or_path"),
            task_type: string("task_type"),
            modules_to_save,
        })
    }

    /// The rank PEFT would create for `module`, and the rank_pattern key that chose it.
    pub fn rank_for(&self, module: &str) -> (usize, Option<&str>) {
        self.rank_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(module))
            .map(|(k, _, r)| (*r, Some(k.as_str())))
            .unwrap_or((self.r, None))
    }

    /// The alpha PEFT would use for `module` (before the rsLoRA fold).
    pub fn alpha_for(&self, module: &str) -> f64 {
        self.alpha_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(module))
            .map(|(_, _, a)| *a)
            .unwrap_or(self.lora_alpha)
    }

    /// Whether `module` is one of the `modules_to_save` (PEFT: equal, or ends with `.name`).
    pub fn saves_module(&self, module: &str) -> bool {
        self.modules_to_save
            .iter()
            .any(|t| module == t || module.ends_with(&format!(".{t}")))
    }
}

/// What a written config says about ranks and alphas.
pub struct RankAlphaPlan {
    pub r: usize,
    pub lora_alpha: f64,
    pub rank_pattern: IndexMap<String, usize>,
    pub alpha_pattern: IndexMap<String, f64>,
}

/// Choose the default rank and alpha (the most common ones) and anchored per-module
/// patterns for the rest, so PEFT resolves each module to exactly its own values.
/// `module_key` turns a canonical path into the module name PEFT matches against.
pub fn plan_rank_alpha<'a>(
    layers: impl Iterator<Item = (&'a str, usize, f64)> + Clone,
    module_key: impl Fn(&str) -> String,
    anchored: bool,
) -> RankAlphaPlan {
    let r = most_common(layers.clone().map(|(_, r, _)| r as f64)).unwrap_or(8.0) as usize;
    let lora_alpha = most_common(layers.clone().map(|(_, _, a)| a)).unwrap_or(r as f64);
    let mut rank_pattern = IndexMap::new();
    let mut alpha_pattern = IndexMap::new();
    for (path, rank, alpha) in layers {
        // anchored `^path` matches that exact module; unanchored, PEFT matches it as a
        // dotted suffix, which stays unique for full paths and survives a wrapper level
        let escaped = regex::escape(&module_key(path));
        let key = if anchored {
            format!("^{escaped}")
        } else {
            escaped
        };
        if rank != r {
            rank_pattern.insert(key.clone(), rank);
        }
        if alpha != lora_alpha {
            alpha_pattern.insert(key, alpha);
        }
    }
    RankAlphaPlan {
        r,
        lora_alpha,
        rank_pattern,
        alpha_pattern,
    }
}

/// The most frequent value; ties go to the first seen, so the choice is deterministic.
fn most_common(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| x.to_bits() == v.to_bits()) {
            Some((_, c)) => *c += 1,
            None => counts.push((v, 1)),
        }
    }
    let max = counts.iter().map(|(_, c)| *c).max()?;
    counts.into_iter().find(|(_, c)| *c == max).map(|(v, _)| v)
}

/// A JSON number for an alpha: an integer when it is one, so configs read naturally (but -0.0
/// stays a float: as an integer it would read back as +0).
pub fn alpha_json(alpha: f64) -> Value {
    let negative_zero = alpha == 0.0 && alpha.is_sign_negative();
    if alpha.fract() == 0.0 && alpha.abs() < 9.0e15 && !negative_zero {
        Value::from(alpha as i64)
    } else {
        Value::from(alpha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> PeftConfig {
        PeftConfig::from_json(Path::new("adapter_config.json"), &v).unwrap()
    }

    #[test]
    fn pattern_keys_match_like_peft_get_pattern_key() {
        let c = cfg(json!({"peft_type": "LORA", "r": 8,
            "rank_pattern": {"q_proj": 2, "layers.1.self_attn.k_proj": 3, "^model.layers.0.mlp.up_proj": 5}}));
        assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj").0, 2);
        assert_eq!(c.rank_for("model.layers.1.self_attn.k_proj").0, 3);
        assert_eq!(c.rank_for("model.layers.0.self_attn.k_proj").0, 8);
        assert_eq!(c.rank_for("model.layers.0.mlp.up_proj").0, 5);
        // "q_proj" must not match a module whose last segment merely ends in q_proj
        assert_eq!(c.rank_for("model.layers.0.self_attn.xq_proj").0, 8);
    }

    #[test]
    fn first_matching_pattern_key_wins_in_file_order() {
        let c = cfg(json!({"peft_type": "LORA", "r": 8,
            "alpha_pattern": {"self_attn.q_proj": 1, "q_proj": 2}}));
        assert_eq!(c.alpha_for("model.layers.0.self_attn.q_proj"), 1.0);
        let c = cfg(json!({"peft_type": "LORA", "r": 8,
            "alpha_pattern": {"q_proj": 2, "self_attn.q_proj": 1}}));
        assert_eq!(c.alpha_for("model.layers.0.self_attn.q_proj"), 2.0);
    }

    #[test]
    fn anchored_bare_key_does_not_match_nested_module() {
        let c = cfg(json!({"peft_type": "LORA", "rank_pattern": {"^q_proj": 2}}));
        assert_eq!(c.rank_for("model.layers.0.self_attn.q_proj").0, 8);
    }

    #[test]
    fn target_modules_match_like_peft_check_target_module_exists() {
        let c = cfg(json!({"peft_type": "LORA", "target_modules": ["q_proj", "mlp.up_proj"]}));
        let t = c.target_modules.unwrap();
        assert_eq!(t.matches("model.layers.0.self_attn.q_proj"), Some(true));
        assert_eq!(t.matches("model.layers.0.mlp.up_proj"), Some(true));
        assert_eq!(t.matches("model.layers.0.self_attn.xq_proj"), Some(false));
        assert_eq!(t.matches("q_proj"), Some(true));
        let c = cfg(json!({"peft_type": "LORA", "target_modules": ".*\\.(q|v)_proj"}));
        let t = c.target_modules.unwrap();
        assert_eq!(t.matches("model.layers.0.self_attn.v_proj"), Some(true));
        // fullmatch: a prefix match is not enough
        assert_eq!(
            t.matches("model.layers.0.self_attn.v_proj.base_layer"),
            Some(false)
        );
    }

    #[test]
    fn defaults_follow_peft() {
        let c = cfg(json!({"peft_type": "LORA"}));
        assert_eq!((c.r, c.lora_alpha, c.use_rslora), (8, 8.0, false));
    }

    #[test]
    fn non_lora_and_missing_type_are_refused() {
        let e = PeftConfig::from_json(Path::new("c.json"), &json!({"peft_type": "IA3"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IA3"), "{e}");
        let e = PeftConfig::from_json(Path::new("c.json"), &json!({"r": 4}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("peft_type"), "{e}");
    }

    #[test]
    fn planned_patterns_resolve_back_to_each_module() {
        let layers = vec![
            ("model.layers.0.q_proj", 4usize, 8.0f64),
            ("model.layers.0.k_proj", 4, 8.0),
            ("model.layers.1.q_proj", 2, 3.5),
        ];
        let plan = plan_rank_alpha(layers.iter().copied(), |p| p.to_string(), true);
        let v = json!({"peft_type": "LORA", "r": plan.r, "lora_alpha": plan.lora_alpha,
            "rank_pattern": plan.rank_pattern, "alpha_pattern": plan.alpha_pattern});
        let c = cfg(v);
        for (p, r, a) in layers {
            assert_eq!(c.rank_for(p).0, r, "{p}");
            assert_eq!(c.alpha_for(p), a, "{p}");
        }
    }
}
