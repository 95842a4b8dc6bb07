//! The model card (`README.md`) a push writes when the repository has none: YAML front matter
//! the Hub indexes (`base_model`, `library_name: peft` for PEFT adapters, `tags`, `license`
//! when known) and a body with the adapter's shape and its lineage from the store.

use crate::adapter::Format;
use crate::registry::manifest::AdapterInfo;

/// What the card describes.
pub struct CardInput<'a> {
    pub repo: &'a str,
    pub format: Format,
    pub info: &'a AdapterInfo,
    pub license: Option<&'a str>,
    /// Store reference and manifest digest, when pushed from the store.
    pub stored: Option<(&'a str, &'a str)>,
}

/// YAML scalars are written as JSON strings, which YAML reads verbatim (no quoting pitfalls).
fn y(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Hub model id (`owner/name` or `name`), not a local path: only those go in `base_model`.
fn hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

pub fn render(c: &CardInput<'_>) -> String {
    let info = c.info;
    let mut fm = String::from("---\n");
    let base = info.base_model.as_deref().filter(|b| hub_id(b));
    if let Some(b) = base {
        fm.push_str(&format!("base_model: {}\n", y(b)));
        fm.push_str("base_model_relation: adapter\n");
    }
    if c.format == Format::Peft {
        fm.push_str("library_name: peft\n");
    }
    if let Some(l) = c.license {
        fm.push_str(&format!("license: {}\n", y(l)));
    }
    fm.push_str("tags:\n- lora\n");
    fm.push_str(&format!("- {}\n", y(&c.format.to_string())));
    // a family is a tag only when it is a slug (`sdxl`), not a description
    let slug = |f: &&String| {
        f.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
    };
    if let Some(f) = info.family.as_ref().filter(slug) {
        fm.push_str(&format!("- {}\n", y(f)));
    }
    fm.push_str("- loratool\n---\n\n");

    let mut body = format!("# {}\n\n", c.repo);
    body.push_str(&format!(
        "A LoRA adapter in {} layout{}.\n\n",
        c.format,
        base.map(|b| format!(" for [{b}](https://huggingface.co/{b})"))
            .unwrap_or_default()
    ));
    let join = |v: &[String]| v.join(", ");
    body.push_str("| | |\n|---|---|\n");
    body.push_str(&format!(
        "| rank | {} |\n",
        join(&info.ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    ));
    body.push_str(&format!(
        "| alpha | {} |\n",
        join(
            &info
                .alphas
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        )
    ));
    body.push_str(&format!("| modules | {} |\n", info.modules));
    body.push_str(&format!(
        "| target modules | {} |\n",
        join(&info.target_modules)
    ));
    body.push_str(&format!("| parameters | {} |\n", info.parameters));
    body.push_str(&format!("| dtypes | {} |\n\n", join(&info.dtypes)));
    if c.format == Format::Peft {
        body.push_str("Load it with PEFT:\n\n```python\nfrom peft import PeftModel\n");
        body.push_str(&format!(
            "model = PeftModel.from_pretrained(base_model, {})\n```\n\n",
            y(c.repo)
        ));
    }
    body.push_str("## Lineage\n\n");
    if let Some((r, d)) = c.stored {
        body.push_str(&format!(
            "Pushed from the loratool store as `{r}` (manifest `{d}`).\n\n"
        ));
    }
    match &info.lineage {
        Some(l) => {
            body.push_str(&format!("Made by `{}`: {}\n\n", l.operation, l.summary));
            if !l.parameters.is_empty() {
                body.push_str("Parameters:\n\n");
                for (k, v) in &l.parameters {
                    body.push_str(&format!("- `{k}`: `{v}`\n"));
                }
                body.push('\n');
            }
            if !l.inputs.is_empty() {
                body.push_str("Inputs:\n\n");
                for i in &l.inputs {
                    body.push_str(&format!("- `{}` ({} `{}`)\n", i.source, i.kind, i.digest));
                }
                body.push('\n');
            }
        }
        None => body.push_str("No lineage recorded.\n\n"),
    }
    body.push_str(&format!(
        "_Card written by loratool {}._\n",
        env!("CARGO_PKG_VERSION")
    ));
    fm + &body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_for_a_peft_adapter() {
        let info = AdapterInfo {
            base_model: Some("meta-llama/Llama-3.2-1B".into()),
            ranks: vec![8],
            alphas: vec![16.0],
            ..Default::default()
        };
        let card = render(&CardInput {
            repo: "acme/x",
            format: Format::Peft,
            info: &info,
            license: Some("apache-2.0"),
            stored: Some(("acme/x:v1", "sha256:00")),
        });
        let fm = card.split("---\n").nth(1).unwrap();
        assert!(fm.contains("base_model: \"meta-llama/Llama-3.2-1B\"\n"));
        assert!(fm.contains("library_name: peft\n"));
        assert!(fm.contains("license: \"apache-2.0\"\n"));
        assert!(fm.contains("tags:\n- lora\n"));
        assert!(card.contains("`acme/x:v1` (manifest `sha256:00`)"));
    }

    #[test]
    fn a_local_base_path_is_not_a_base_model() {
        let info = AdapterInfo {
            base_model: Some("/data/models/llama".into()),
            ..Default::default()
        };
        let card = render(&CardInput {
            repo: "a/b",
            format: Format::Kohya,
            info: &info,
            license: None,
            stored: None,
        });
        assert!(!card.contains("base_model"));
        assert!(!card.contains("library_name"));
    }
}
