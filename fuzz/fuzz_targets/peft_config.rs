//! PEFT `adapter_config.json`: any bytes give a config or an error naming the file; pattern
//! lookups never panic; and the config loratool writes for a set of modules (the
//! `target_modules` strings of the input, with distinct ranks and alphas) resolves every module
//! back to exactly its own rank and alpha, as PEFT's `get_pattern_key` would.
#![no_main]
use loratool::adapter::peft_config::{alpha_json, plan_rank_alpha, PeftConfig};
use loratool_fuzz::{assert_names_file, run};
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, _| {
    let path = Path::new("/fuzz/adapter_config.json");
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match PeftConfig::from_json(path, &json) {
        Ok(cfg) => {
            for key in cfg.rank_pattern.iter().map(|(k, _, _)| k) {
                let _ = cfg.rank_for(key);
                let _ = cfg.alpha_for(key);
            }
            let _ = cfg.saves_module("model.layers.0.q_proj");
        }
        Err(e) => assert_names_file(&e, path),
    }

    let modules: Vec<String> = json
        .get("target_modules")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let layers: Vec<(&str, usize, f64)> = modules
        .iter()
        .filter(|m| seen.insert(m.as_str()))
        .take(64)
        .enumerate()
        .map(|(i, m)| (m.as_str(), 1 + i % 5, 0.5 * (i % 7) as f64 + 1.0))
        .collect();
    if layers.is_empty() {
        return;
    }
    let plan = plan_rank_alpha(layers.iter().copied(), |p| p.to_string(), true);
    let alpha_pattern: serde_json::Map<String, serde_json::Value> = plan
        .alpha_pattern
        .iter()
        .map(|(k, a)| (k.clone(), alpha_json(*a)))
        .collect();
    let written = serde_json::json!({
        "peft_type": "LORA",
        "r": plan.r,
        "lora_alpha": alpha_json(plan.lora_alpha),
        "rank_pattern": plan.rank_pattern,
        "alpha_pattern": alpha_pattern,
    });
    let text = serde_json::to_string(&written).expect("serialise");
    let reread: serde_json::Value = serde_json::from_str(&text).expect("written JSON parses");
    let cfg = PeftConfig::from_json(path, &reread).expect("the written config reads");
    for (m, r, a) in layers {
        assert_eq!(cfg.rank_for(m).0, r, "rank of {m:?}");
        assert_eq!(cfg.alpha_for(m), a, "alpha of {m:?}");
    }
}));
