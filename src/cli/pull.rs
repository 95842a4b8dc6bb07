//! `loratool pull <hf://...|oci://...>`: parse, call `remote`, render.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::push::RegistryArgs;
use super::remote_progress::Bars;
use crate::registry::Reference;
use crate::remote::hub::{self, FetchOptions, HubConfig};
use crate::remote::oci;
use crate::remote::resolve::save_fetched;
use crate::remote::RemoteRef;

#[derive(Args)]
pub struct PullArgs {
    /// hf://owner/name[@revision][/subfolder] or oci://host[:port]/repository[:tag|@digest].
    pub source: String,
    /// Store it as namespace/name:tag (Hub: in addition to the Hugging Face cache; OCI: instead
    /// of the name taken from the repository).
    #[arg(long)]
    pub save: Option<String>,
    /// Hub: the file to take (relative to the subfolder) when the repository holds several.
    #[arg(long)]
    pub file: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PullArgs) -> Result<()> {
    let src = RemoteRef::parse(&args.source)
        .context("expected hf://owner/name or oci://host/repository:tag")??;
    let save = args
        .save
        .as_deref()
        .map(|s| Reference::parse_with_default(s, Some("latest")))
        .transpose()?;
    let bars = Bars::default();
    match src {
        RemoteRef::Hub(h) => {
            let config = HubConfig::from_env()?;
            let opts = FetchOptions {
                file: args.file.clone(),
            };
            let local =
                hub::fetch(&h, &config, &opts, &bars).with_context(|| format!("pulling {h}"))?;
            let saved = match &save {
                Some(r) => {
                    let store = super::registry::open_store()?;
                    Some((r.to_string(), save_fetched(&store, &local, r)?.to_string()))
                }
                None => None,
            };
            if args.json {
                let v = json!({
                    "source": h.to_string(),
                    "pinned": local.provenance.pinned,
                    "commit": local.provenance.revision,
                    "path": local.path,
                    "files": local.files,
                    "saved_as": saved.as_ref().map(|s| &s.0),
                    "digest": saved.as_ref().map(|s| &s.1),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} -> {}", local.provenance.pinned, local.path.display());
                if let Some((r, d)) = saved {
                    println!("saved {r} {d}");
                }
            }
        }
        RemoteRef::Oci(o) => {
            let opts = args.registry.options()?;
            let name = match save {
                Some(r) => r,
                None => oci::default_save_name(&o)?,
            };
            let store = super::registry::open_store()?;
            let report = oci::pull(&store, &o, &name, &opts, &bars)
                .with_context(|| format!("pulling {o}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "pulled {o} as {} {} ({} blob(s) downloaded, {} already stored)",
                    report.saved_as, report.digest, report.blobs_downloaded, report.blobs_present
                );
            }
        }
    }
    Ok(())
}
