//! Which ggml type each tensor of a model gets: llama-quantize's file types ("presets" such as
//! Q4_K_M, with their per-tensor mixtures) and the uniform `--pure` choice.
//!
//! Owns: the preset table ([`Preset`]: name, `llama_ftype` id, default type), the model facts
//! the rules read ([`ModelFacts`], from the GGUF metadata), which tensors may be quantized at
//! all, the tensor categories, the mixture rules, and the fallback for rows that do not fit a
//! type's block. Does not own encoding or files (`quant`, `io`, `ops::gguf_quantize`).
//!
//! Source: llama.cpp `src/llama-quant.cpp` as vendored by the PyPI source package
//! `llama-cpp-python` 0.3.36: `tensor_allows_quantization`, `tensor_get_category`,
//! `tensor_type_fallback`, `llama_tensor_get_type_impl`, `llama_tensor_get_type`,
//! `tensor_requires_imatrix`, `llama_ftype_get_default_type`, `init_quantize_state_counters`;
//! the visiting order from `llama_model_loader::weight_name_comparer`; preset names from
//! `tools/quantize/quantize.cpp` (`QUANT_OPTIONS`); the model facts from `llama_model::
//! load_hparams` and the per-architecture `LLM_TYPE_70B` cases in `src/models/*.cpp`. Only the
//! presets whose every outcome loratool can encode are here (no IQ/TQ/MXFP4 types); within
//! those, every branch of the C rules is mirrored in its order, so a rule that only fires for
//! another preset is absent rather than rewritten.

use crate::error::{Error, Result};
use crate::io::gguf::GgufValue;
use crate::quant::QuantType;
use indexmap::IndexMap;
use std::fmt;

/// A llama-quantize file type (`llama_ftype`) loratool can produce.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// (preset, llama-quantize's name, `llama_ftype` id, default tensor type).
const PRESETS: [(Preset, &str, u32, QuantType); 18] = [
    (Preset::F32, "F32", 0, QuantType::F32),
    (Preset::F16, "F16", 1, QuantType::F16),
    (Preset::Q4_0, "Q4_0", 2, QuantType::Q4_0),
    (Preset::Q4_1, "Q4_1", 3, QuantType::Q4_1),
    (Preset::Q8_0, "Q8_0", 7, QuantType::Q8_0),
    (Preset::Q5_0, "Q5_0", 8, QuantType::Q5_0),
    (Preset::Q5_1, "Q5_1", 9, QuantType::Q5_1),
    (Preset::Q2_K, "Q2_K", 10, QuantType::Q2_K),
    (Preset::Q3_K_S, "Q3_K_S", 11, QuantType::Q3_K),
    (Preset::Q3_K_M, "Q3_K_M", 12, QuantType::Q3_K),
    (Preset::Q3_K_L, "Q3_K_L", 13, QuantType::Q3_K),
    (Preset::Q4_K_S, "Q4_K_S", 14, QuantType::Q4_K),
    (Preset::Q4_K_M, "Q4_K_M", 15, QuantType::Q4_K),
    (Preset::Q5_K_S, "Q5_K_S", 16, QuantType::Q5_K),
    (Preset::Q5_K_M, "Q5_K_M", 17, QuantType::Q5_K),
    (Preset::Q6_K, "Q6_K", 18, QuantType::Q6_K),
    (Preset::Q2_K_S, "Q2_K_S", 21, QuantType::Q2_K),
    (Preset::BF16, "BF16", 32, QuantType::BF16),
];

/// llama-quantize's aliases (`QUANT_OPTIONS`): the plain K names mean the M mixture.
const ALIASES: [(&str, Preset); 3] = [
    ("Q3_K", Preset::Q3_K_M),
    ("Q4_K", Preset::Q4_K_M),
    ("Q5_K", Preset::Q5_K_M),
];

impl Preset {
    fn row(self) -> &'static (Preset, &'static str, u32, QuantType) {
        PRESETS.iter().find(|r| r.0 == self).unwrap_or(&PRESETS[0])
    }

    /// llama-quantize's name: `Q4_K_M`.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The `llama_ftype` id written to `general.file_type`.
    pub fn ftype(self) -> u32 {
        self.row().2
    }

    /// The type of tensors no rule singles out (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> QuantType {
        self.row().3
    }

    /// The preset llama-quantize means by `name` (case-insensitive, aliases included).
    pub fn from_name(name: &str) -> Option<Preset> {
        PRESETS
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(name))
            .map(|r| r.0)
            .or_else(|| {
                ALIASES
                    .iter()
                    .find(|a| a.0.eq_ignore_ascii_case(name))
                    .map(|a| a.1)
            })
    }

    /// Every preset name, for messages.
    pub fn names() -> Vec<&'static str> {
        PRESETS.iter().map(|r| r.1).collect()
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for: one type for every quantizable tensor (`llama-quantize --pure`), or
/// a preset's per-tensor mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantTarget {
    Uniform(QuantType),
    Preset(Preset),
}

impl QuantTarget {
    /// Parses `--type`: a ggml type name (`q4_k`, `q8_0`, `f16`) is the uniform type, as loratool
    /// has always read it; a name only llama-quantize has (`q4_k_m`, `q3_k_s`, ...) is that
    /// preset. With `mixture`, every name is read as llama-quantize reads it (`q2_k` is the Q2_K
    /// mixture, `q4_k` the Q4_K_M alias).
    pub fn parse(name: &str, mixture: bool) -> Result<QuantTarget> {
        if !mixture {
            if let Ok(t) = name.parse::<QuantType>() {
                return Ok(QuantTarget::Uniform(t));
            }
        }
        if let Some(p) = Preset::from_name(name) {
            return Ok(QuantTarget::Preset(p));
        }
        let types: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
        Err(Error::Invalid(format!(
            "unknown quantization type '{name}'; ggml types (one type for every tensor): {}; \
             llama-quantize presets (per-tensor mixtures): {}",
            types.join(", "),
            Preset::names().join(", ")
        )))
    }

    /// The `general.file_type` written: the preset's id, or for a uniform type the id of the
    /// file type llama.cpp names after it (K-quants: the "S" variants).
    pub fn ftype(self) -> u32 {
        match self {
            QuantTarget::Preset(p) => p.ftype(),
            QuantTarget::Uniform(t) => match t {
                QuantType::Q3_K => 11,
                QuantType::Q4_K => 14,
                QuantType::Q5_K => 16,
                other => PRESETS.iter().find(|r| r.3 == other).map_or(0, |r| r.2),
            },
        }
    }

    /// The type of tensors no rule singles out.
    pub fn default_type(self) -> QuantType {
        match self {
            QuantTarget::Uniform(t) => t,
            QuantTarget::Preset(p) => p.default_type(),
        }
    }

    pub fn name(self) -> String {
        match self {
            QuantTarget::Uniform(t) => t.name().to_string(),
            QuantTarget::Preset(p) => p.name().to_string(),
        }
    }
}

/// The hyperparameters llama-quantize's rules read (`llama_model::load_hparams`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    pub arch: String,
    /// `{arch}.block_count` (`n_layer_all`, MTP layers included): the layer count of the
    /// ffn_down/gate/up rules.
    pub n_layer: u32,
    /// Heads and KV heads of layer 0 (`n_gqa()` = their ratio).
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count`, 0 for dense models.
    pub n_expert: u32,
    /// llama.cpp classifies the model as `LLM_TYPE_70B` (its attn_v rule).
    pub is_70b: bool,
}

/// A u32 metadata value, or the first element of a per-layer array (`get_key_or_arr`).
fn first_u32(v: &GgufValue) -> Option<u32> {
    match v {
        GgufValue::Array { items, .. } => items.first().and_then(first_u32),
        other => other.as_u64().and_then(|x| u32::try_from(x).ok()),
    }
}

impl ModelFacts {
    /// Reads the facts from a model's metadata; `{arch}.block_count` is required (llama.cpp
    /// refuses a model without it), the rest default as llama.cpp defaults them.
    pub fn from_kv(kv: &IndexMap<String, GgufValue>) -> Result<ModelFacts> {
        let arch = kv
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| {
                Error::Invalid(
                    "no general.architecture: a llama.cpp model names its architecture".into(),
                )
            })?
            .to_string();
        let get = |key: &str| kv.get(&format!("{arch}.{key}")).and_then(first_u32);
        let n_layer = get("block_count").ok_or_else(|| {
            Error::Invalid(format!(
                "no {arch}.block_count: llama-quantize's mixtures need the layer count"
            ))
        })?;
        let n_head = get("attention.head_count").unwrap_or(0);
        let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);
        let n_expert = get("expert_count").unwrap_or(0);
        let n_layer_main = n_layer.saturating_sub(get("nextn_predict_layers").unwrap_or(0));
        let is_70b = match arch.as_str() {
            "llama" => n_layer_main == 80 && n_expert != 8 && n_head != n_head_kv,
            "deci" | "olmo" | "qwen2" => n_layer_main == 80,
            "jais2" => n_layer_main == 68,
            _ => false,
        };
        Ok(ModelFacts {
            arch,
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            is_70b,
        })
    }

    /// The facts of a model whose tensors get one type: only the architecture matters.
    pub fn arch_only(arch: &str) -> ModelFacts {
        ModelFacts {
            arch: arch.to_string(),
            n_layer: 0,
            n_head: 0,
            n_head_kv: 0,
            n_expert: 0,
            is_70b: false,
        }
    }

    /// `hparams.n_gqa()`: heads per KV head, 0 without KV heads.
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

/// Name fragments of tensors llama-quantize never quantizes (`tensor_allows_quantization`):
/// norms, MoE routers, vision/audio positional tensors, SSM and short convolutions, tiny
/// per-layer projections, RWKV mixing vectors.
const KEPT_FRAGMENTS: [&str; 35] = [
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Further fragments kept as they are in `glm5-next` models.
const GLM5_NEXT_KEPT: [&str; 14] = [
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
];

/// Whether llama-quantize quantizes this model tensor at all (dimensions counted as
/// `ggml_n_dims` counts them: trailing sizes of 1 do not count).
pub fn tensor_allows_quantization(name: &str, dims: &[u64], arch: &str) -> bool {
    let n_dims = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && name.ends_with("weight")
        && !KEPT_FRAGMENTS.iter().any(|k| name.contains(k))
        && !(arch == "glm5-next" && GLM5_NEXT_KEPT.iter().any(|k| name.contains(k)))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// `tensor_category`: the broad role of a tensor, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionKvB,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    const BY_FRAGMENT: [(&str, Category); 9] = [
        ("attn_qkv.weight", Category::AttentionQkv),
        ("attn_kv_b.weight", Category::AttentionKvB),
        ("attn_v.weight", Category::AttentionV),
        ("attn_k.weight", Category::AttentionK),
        ("attn_q.weight", Category::AttentionQ),
        ("attn_output.weight", Category::AttentionOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    BY_FRAGMENT
        .iter()
        .find(|(f, _)| name.contains(f))
        .map_or(Category::Other, |&(_, c)| c)
}

fn is_attn_v(c: Category) -> bool {
    matches!(
        c,
        Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
    )
}

/// `sscanf(name, "blk.%d.", &layer)`: the layer number after `blk.`, if any.
fn block_index(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let digits_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(rest.len(), |(i, _)| i);
    rest[..digits_end].parse().ok()
}

/// llama-quantize's visiting order (`weight_name_comparer`): by layer (tensors outside
/// `blk.N.` first), then by name. The mixture rules count attn_v and ffn tensors in this order.
pub fn visiting_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let la = block_index(names[a]).unwrap_or(-1);
        let lb = block_index(names[b]).unwrap_or(-1);
        la.cmp(&lb)
            .then_with(|| names[a].as_bytes().cmp(names[b].as_bytes()))
    });
    order
}

/// The type a tensor gets: `None` when it is kept as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeChoice {
    pub to: Option<QuantType>,
    /// Why the type is not the one the rules chose (rows that do not fit its block).
    pub fallback: Option<String>,
}

/// A tensor as the rules see it.
pub struct TensorShape<'a> {
    pub name: &'a str,
    /// ggml order: `dims[0]` is the row length.
    pub dims: &'a [u64],
}

/// `tensor_type_fallback`: `t`, or its replacement when its block does not divide the rows of
/// `row` values (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, then F16), with a
/// note saying so.
pub fn fit_rows(name: &str, row: u64, t: QuantType) -> (QuantType, Option<String>) {
    let block = t.block_size() as u64;
    if row.is_multiple_of(block) {
        return (t, None);
    }
    let first = match t {
        QuantType::Q2_K | QuantType::Q3_K => QuantType::Q4_0,
        QuantType::Q4_K => QuantType::Q5_0,
        QuantType::Q5_K => QuantType::Q5_1,
        QuantType::Q6_K => QuantType::Q8_0,
        other => other,
    };
    let to = if row.is_multiple_of(first.block_size() as u64) {
        first
    } else {
        QuantType::F16
    };
    (
        to,
        Some(format!(
            "{name}: rows of {row} do not fit {t}'s {block}-value blocks; {to} instead"
        )),
    )
}

/// The per-model state of `llama_tensor_get_type_impl` (`quantize_state_impl`).
struct Mixture<'a> {
    preset: Preset,
    facts: &'a ModelFacts,
    has_imatrix: bool,
    has_tied_embeddings: bool,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

impl Mixture<'_> {
    /// `layer_info`: the counter, or for MoE models the layer parsed from the name.
    fn layer(&self, counter: i64, name: &str) -> Result<(i64, i64)> {
        let n_layer = i64::from(self.facts.n_layer);
        if self.facts.n_expert.max(1) > 1 {
            let i = block_index(name).ok_or_else(|| {
                Error::Invalid(format!("failed to determine the layer of tensor {name}"))
            })?;
            if i < 0 || i >= n_layer {
                return Err(Error::Invalid(format!(
                    "bad layer {i} for tensor {name}: must be in [0, {n_layer})"
                )));
            }
            return Ok((i, n_layer));
        }
        Ok((counter, n_layer))
    }

    /// `llama_tensor_get_type_impl` for the presets in [`PRESETS`].
    fn choose(&mut self, t: &TensorShape<'_>, cat: Category) -> Result<QuantType> {
        use Preset as P;
        use QuantType as T;
        let ftype = self.preset;
        let arch = self.facts.arch.as_str();
        let n_expert = self.facts.n_expert;
        let n_gqa = self.facts.n_gqa();
        let falcon = arch == "falcon";
        let mut new_type = ftype.default_type();
        if arch == "glm5-next"
            && ["attn_q_a", "attn_q_b", "nextn.eh_proj"]
                .iter()
                .any(|f| t.name.contains(f))
            && !matches!(new_type, T::F32 | T::BF16 | T::F16)
        {
            return Ok(T::Q8_0);
        }
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            let nx = t.dims[0];
            if falcon || !nx.is_multiple_of(new_type.block_size() as u64) {
                new_type = T::Q8_0;
            } else if new_type != T::Q8_0 {
                new_type = T::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // only IQ/TQ file types change the token embedding
        } else if is_attn_v(cat) {
            if ftype == P::Q2_K {
                new_type = if n_gqa >= 4 { T::Q4_K } else { T::Q3_K };
            } else if ftype == P::Q2_K_S && n_gqa >= 4 {
                new_type = T::Q4_K;
            } else if ftype == P::Q3_K_M {
                new_type = if self.i_attention_wv < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                };
            } else if ftype == P::Q3_K_L {
                new_type = T::Q5_K;
            } else if matches!(ftype, P::Q4_K_M | P::Q5_K_M)
                && use_more_bits(self.i_attention_wv, self.n_attention_wv)
            {
                new_type = T::Q6_K;
            } else if ftype == P::Q4_K_S && self.i_attention_wv < 4 {
                new_type = T::Q5_K;
            }
            if self.facts.is_70b && matches!(new_type, T::Q3_K | T::Q4_K) {
                new_type = T::Q5_K;
            }
            if n_expert == 8 {
                new_type = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttentionK {
            if n_expert == 8 {
                new_type = T::Q8_0;
            }
        } else if cat == Category::AttentionQ {
            // only IQ file types change attn_q
        } else if cat == Category::FfnDown {
            let (i_layer, n_layer) = self.layer(self.i_ffn_down, t.name)?;
            if ftype == P::Q2_K {
                new_type = T::Q3_K;
            } else if ftype == P::Q2_K_S {
                if i_layer < n_layer / 8 {
                    new_type = T::Q4_K;
                }
            } else if ftype == P::Q3_K_M {
                new_type = if i_layer < n_layer / 16 {
                    T::Q5_K
                } else if !falcon || use_more_bits(i_layer, n_layer) {
                    T::Q4_K
                } else {
                    T::Q3_K
                };
            } else if ftype == P::Q3_K_L {
                new_type = if falcon { T::Q4_K } else { T::Q5_K };
            } else if ftype == P::Q4_K_M {
                if falcon {
                    new_type = if i_layer < n_layer / 16 {
                        T::Q6_K
                    } else if use_more_bits(i_layer, n_layer) {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if use_more_bits(i_layer, n_layer) {
                    new_type = T::Q6_K;
                }
            } else if ftype == P::Q5_K_M && use_more_bits(i_layer, n_layer) {
                new_type = T::Q6_K;
            } else if ftype == P::Q4_K_S && !falcon && i_layer < n_layer / 8 {
                new_type = T::Q5_K;
            } else if matches!(ftype, P::Q4_0 | P::Q5_0)
                && self.has_imatrix
                && i_layer < n_layer / 8
            {
                new_type = if ftype == P::Q4_0 { T::Q4_1 } else { T::Q5_1 };
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttentionOutput {
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        ftype,
                        P::Q2_K | P::Q3_K_S | P::Q3_K_M | P::Q4_K_S | P::Q4_K_M
                    ) {
                        new_type = T::Q5_K;
                    }
                } else if ftype == P::Q2_K {
                    new_type = T::Q3_K;
                } else if ftype == P::Q3_K_M {
                    new_type = T::Q4_K;
                } else if ftype == P::Q3_K_L {
                    new_type = T::Q5_K;
                }
            } else if ftype == P::Q3_K_L {
                new_type = T::Q4_K;
            }
        } else if cat == Category::FfnGate {
            // (llama-quant.cpp's ATTENTION_QKV branch sits here, unreachable: the attn_v
            // branch above already takes fused QKV tensors)
            // the counter still advances (and validates the layer for MoE models)
            self.layer(self.i_ffn_gate, t.name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer(self.i_ffn_up, t.name)?;
            self.i_ffn_up += 1;
        }
        Ok(new_type)
    }
}

/// Chooses every tensor's type as llama-quantize does for `target` (in input order; `None` for
/// tensors kept as they are). `has_imatrix` is whether an importance matrix is given (one rule
/// depends on it, and Q2_K_S refuses to run without one).
pub fn choose_types(
    target: QuantTarget,
    facts: &ModelFacts,
    tensors: &[TensorShape<'_>],
    has_imatrix: bool,
) -> Result<Vec<TypeChoice>> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    let cats: Vec<Category> = names.iter().map(|n| category(n)).collect();
    let mut mix = match target {
        QuantTarget::Preset(preset) => Some(Mixture {
            preset,
            facts,
            has_imatrix,
            has_tied_embeddings: !cats.contains(&Category::Output),
            n_attention_wv: cats.iter().filter(|&&c| is_attn_v(c)).count() as i64,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
        }),
        QuantTarget::Uniform(_) => None,
    };
    let default_type = target.default_type();
    let mut out = vec![
        TypeChoice {
            to: None,
            fallback: None,
        };
        tensors.len()
    ];
    for i in visiting_order(&names) {
        let t = &tensors[i];
        if !tensor_allows_quantization(t.name, t.dims, &facts.arch) {
            continue;
        }
        let mut to = default_type;
        let mut note = None;
        if default_type.is_quantized() {
            if let Some(mix) = mix.as_mut() {
                to = mix.choose(t, cats[i])?;
            }
            (to, note) = fit_rows(t.name, t.dims[0], to);
        }
        if let QuantTarget::Preset(Preset::Q2_K_S) = target {
            let exempt = matches!(cats[i], Category::Output | Category::TokenEmbd);
            if to == QuantType::Q2_K && !exempt && !has_imatrix {
                return Err(Error::Invalid(format!(
                    "tensor {}: the Q2_K_S preset quantizes it to q2_K, which llama-quantize \
                     only does with an importance matrix; pass --imatrix",
                    t.name
                )));
            }
        }
        out[i] = TypeChoice {
            to: Some(to),
            fallback: note,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32) -> ModelFacts {
        ModelFacts {
            arch: arch.into(),
            n_layer,
            n_head,
            n_head_kv,
            n_expert: 0,
            is_70b: false,
        }
    }

    /// A dense llama-like model's tensor list, in file order (not llama-quantize's order).
    fn llama_tensors(n_layer: usize, tied: bool) -> Vec<(String, Vec<u64>)> {
        let mut v = vec![("token_embd.weight".to_string(), vec![256, 1000])];
        for b in 0..n_layer {
            for (n, dims) in [
                ("attn_norm.weight", vec![256]),
                ("attn_q.weight", vec![256, 256]),
                ("attn_k.weight", vec![256, 64]),
                ("attn_v.weight", vec![256, 64]),
                ("attn_output.weight", vec![256, 256]),
                ("ffn_norm.weight", vec![256]),
                ("ffn_gate.weight", vec![256, 512]),
                ("ffn_up.weight", vec![256, 512]),
                ("ffn_down.weight", vec![512, 256]),
            ] {
                v.push((format!("blk.{b}.{n}"), dims));
            }
        }
        v.push(("output_norm.weight".into(), vec![256]));
        if !tied {
            v.push(("output.weight".into(), vec![256, 1000]));
        }
        v
    }

    fn choose(
        target: QuantTarget,
        f: &ModelFacts,
        tensors: &[(String, Vec<u64>)],
    ) -> IndexMap<String, Option<QuantType>> {
        let shapes: Vec<TensorShape<'_>> = tensors
            .iter()
            .map(|(n, d)| TensorShape { name: n, dims: d })
            .collect();
        let out = choose_types(target, f, &shapes, false).unwrap();
        tensors
            .iter()
            .zip(out)
            .map(|((n, _), c)| (n.clone(), c.to))
            .collect()
    }

    #[test]
    fn names_parse_as_llama_quantize_and_loratool_read_them() {
        let p = |s: &str, m: bool| QuantTarget::parse(s, m).unwrap();
        assert_eq!(p("q4_k", false), QuantTarget::Uniform(QuantType::Q4_K));
        assert_eq!(p("q4_k", true), QuantTarget::Preset(Preset::Q4_K_M));
        assert_eq!(p("Q4_K_M", false), QuantTarget::Preset(Preset::Q4_K_M));
        assert_eq!(p("q2_k", true), QuantTarget::Preset(Preset::Q2_K));
        assert_eq!(p("q2_k", false), QuantTarget::Uniform(QuantType::Q2_K));
        assert_eq!(p("q3_k_s", false), QuantTarget::Preset(Preset::Q3_K_S));
        assert!(QuantTarget::parse("iq2_xxs", true).is_err());
        let err = QuantTarget::parse("q7_k", false).unwrap_err().to_string();
        assert!(err.contains("Q4_K_M") && err.contains("q4_K"), "{err}");
        // llama.h's llama_ftype ids
        for (name, id) in [
            ("Q2_K", 10),
            ("Q3_K_S", 11),
            ("Q3_K_M", 12),
            ("Q3_K_L", 13),
            ("Q4_K_S", 14),
            ("Q4_K_M", 15),
            ("Q5_K_S", 16),
            ("Q5_K_M", 17),
            ("Q6_K", 18),
            ("Q8_0", 7),
            ("Q2_K_S", 21),
            ("BF16", 32),
        ] {
            assert_eq!(Preset::from_name(name).unwrap().ftype(), id, "{name}");
        }
    }

    #[test]
    fn visiting_order_is_by_layer_then_name() {
        let names = [
            "blk.10.attn_q.weight",
            "output.weight",
            "blk.2.ffn_down.weight",
            "blk.2.attn_v.weight",
            "token_embd.weight",
        ];
        let order: Vec<&str> = visiting_order(&names).iter().map(|&i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "token_embd.weight",
                "blk.2.attn_v.weight",
                "blk.2.ffn_down.weight",
                "blk.10.attn_q.weight"
            ]
        );
    }

    /// Q4_K_M on an 8-layer llama, worked out by hand from llama_tensor_get_type_impl:
    /// use_more_bits(i, 8) holds for i in {0, 3, 6, 7} (i < 1, i >= 7, (i - 1) % 3 == 2), which
    /// sends attn_v and ffn_down there to Q6_K; output to Q6_K; the embedding keeps Q4_K.
    #[test]
    fn q4_k_m_by_hand() {
        let f = facts("llama", 8, 8, 2);
        let t = llama_tensors(8, false);
        let got = choose(QuantTarget::Preset(Preset::Q4_K_M), &f, &t);
        let more = [0, 3, 6, 7];
        for (name, to) in &got {
            let want = if name.ends_with("norm.weight") {
                None
            } else if name == "output.weight" {
                Some(QuantType::Q6_K)
            } else if name.contains("attn_v") || name.contains("ffn_down") {
                let layer = block_index(name).unwrap();
                Some(if more.contains(&layer) {
                    QuantType::Q6_K
                } else {
                    QuantType::Q4_K
                })
            } else {
                Some(QuantType::Q4_K)
            };
            assert_eq!(*to, want, "{name}");
        }
    }

    /// Tied embeddings (no output.weight): the embedding is quantized like the output.
    #[test]
    fn tied_embedding_takes_the_output_rule() {
        let f = facts("qwen2", 4, 4, 4);
        let t = llama_tensors(4, true);
        let got = choose(QuantTarget::Preset(Preset::Q4_K_M), &f, &t);
        assert_eq!(got["token_embd.weight"], Some(QuantType::Q6_K));
        let got = choose(QuantTarget::Preset(Preset::Q8_0), &f, &t);
        assert_eq!(got["token_embd.weight"], Some(QuantType::Q8_0));
        let got = choose(QuantTarget::Uniform(QuantType::Q4_K), &f, &t);
        assert_eq!(got["token_embd.weight"], Some(QuantType::Q4_K));
    }

    /// Q2_K: attn_v Q4_K with GQA >= 4 (else Q3_K), ffn_down and attn_output Q3_K; rows of 352
    /// (11 blocks of 32) fall back from q3_K to q4_0.
    #[test]
    fn q2_k_gqa_and_fallback() {
        let mut t = llama_tensors(2, false);
        for (n, d) in t.iter_mut() {
            if n.ends_with("ffn_down.weight") {
                d[0] = 352;
            }
        }
        let got = choose(
            QuantTarget::Preset(Preset::Q2_K),
            &facts("llama", 2, 8, 2),
            &t,
        );
        assert_eq!(got["blk.0.attn_v.weight"], Some(QuantType::Q4_K));
        assert_eq!(got["blk.0.attn_output.weight"], Some(QuantType::Q3_K));
        assert_eq!(got["blk.0.ffn_down.weight"], Some(QuantType::Q4_0));
        assert_eq!(got["blk.0.attn_q.weight"], Some(QuantType::Q2_K));
        let got = choose(
            QuantTarget::Preset(Preset::Q2_K),
            &facts("llama", 2, 8, 4),
            &t,
        );
        assert_eq!(got["blk.1.attn_v.weight"], Some(QuantType::Q3_K));
    }

    #[test]
    fn q2_k_s_needs_an_importance_matrix() {
        let t = llama_tensors(2, false);
        let shapes: Vec<TensorShape<'_>> = t
            .iter()
            .map(|(n, d)| TensorShape { name: n, dims: d })
            .collect();
        let f = facts("llama", 2, 8, 2);
        let err = choose_types(QuantTarget::Preset(Preset::Q2_K_S), &f, &shapes, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.0.attn_k.weight") && err.contains("--imatrix"),
            "{err}"
        );
        assert!(choose_types(QuantTarget::Preset(Preset::Q2_K_S), &f, &shapes, true).is_ok());
    }

    #[test]
    fn facts_from_metadata() {
        let mut kv = IndexMap::new();
        kv.insert(
            "general.architecture".into(),
            GgufValue::String("llama".into()),
        );
        kv.insert("llama.block_count".into(), GgufValue::U32(80));
        kv.insert("llama.attention.head_count".into(), GgufValue::U32(64));
        kv.insert(
            "llama.attention.head_count_kv".into(),
            GgufValue::Array {
                elem_type: 4,
                items: vec![GgufValue::U32(8); 80],
            },
        );
        let f = ModelFacts::from_kv(&kv).unwrap();
        assert_eq!(
            (f.n_layer, f.n_head, f.n_head_kv, f.n_gqa()),
            (80, 64, 8, 8)
        );
        assert!(f.is_70b);
        kv.shift_remove("llama.block_count");
        assert!(ModelFacts::from_kv(&kv).is_err());
    }
}
