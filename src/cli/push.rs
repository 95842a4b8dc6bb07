//! `loratool push <store-ref|path> <hf://...|oci://...>`: parse, call `remote`, render.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

use super::remote_progress::Bars;
use crate::adapter::Format;
use crate::registry::{parse_format, Reference};
use crate::remote::hub::{self, HubConfig, PushOptions};
use crate::remote::oci::{self, auth::Credentials, OciOptions};
use crate::remote::source::{prepare, PushInput};
use crate::remote::RemoteRef;

#[derive(Args)]
pub struct PushArgs {
    /// A stored adapter (namespace/name:tag, name@sha256:...) or a path.
    pub source: String,
    /// Where to: hf://owner/name[@branch][/subfolder] or oci://host[:port]/repository:tag.
    pub dest: String,
    /// Convert to this format on the way (Hub only): peft, diffusers, kohya.
    #[arg(long, value_parser = parse_to)]
    pub to: Option<Format>,
    /// Create the Hub repository as private (an existing one keeps its visibility).
    #[arg(long)]
    pub private: bool,
    /// Do not write a model card (README.md) when the repository has none.
    #[arg(long)]
    pub no_card: bool,
    /// The commit summary (default: "loratool push <ref> (<manifest digest>)").
    #[arg(long)]
    pub message: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How to reach an OCI registry (shared by push and pull).
#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to a registry that is not on a loopback address.
    #[arg(long)]
    pub plain_http: bool,
    /// Registry username (the password is read from stdin with --password-stdin, or from
    /// LORATOOL_REGISTRY_PASSWORD).
    #[arg(long)]
    pub username: Option<String>,
    /// Read the registry password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Upload OCI blobs in chunks of this many bytes (default 16 MiB).
    #[arg(long)]
    pub chunk_size: Option<u64>,
}

impl RegistryArgs {
    pub fn options(&self) -> Result<OciOptions> {
        let credentials = match &self.username {
            Some(u) => {
                let password = if self.password_stdin {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                } else {
                    std::env::var("LORATOOL_REGISTRY_PASSWORD").context(
                        "--username needs --password-stdin or LORATOOL_REGISTRY_PASSWORD",
                    )?
                };
                Some(Credentials {
                    username: u.clone(),
                    password: crate::remote::http::Secret::new(password),
                })
            }
            None if self.password_stdin => bail!("--password-stdin needs --username"),
            None => None,
        };
        Ok(OciOptions {
            plain_http: self.plain_http,
            credentials,
            chunk_bytes: self.chunk_size,
            ..OciOptions::default()
        })
    }
}

fn parse_to(s: &str) -> Result<Format, String> {
    parse_format(s).ok_or_else(|| format!("unknown format '{s}' (peft, diffusers, kohya, gguf)"))
}

/// A store reference when the argument is not an existing path and parses as one.
fn as_store_ref(source: &str) -> Option<Reference> {
    if std::path::Path::new(source).exists() {
        return None;
    }
    Reference::parse(source).ok()
}

pub fn run(args: PushArgs) -> Result<()> {
    let dest = RemoteRef::parse(&args.dest)
        .context("the destination must be hf://owner/name or oci://host/repository:tag")??;
    let bars = Bars::default();
    match dest {
        RemoteRef::Hub(h) => {
            let config = HubConfig::from_env()?;
            let store;
            let input = match as_store_ref(&args.source) {
                Some(reference) => {
                    store = super::registry::open_store()?;
                    PushInput::Stored {
                        store: &store,
                        reference,
                    }
                }
                None => PushInput::Path(PathBuf::from(&args.source)),
            };
            let prepared = prepare(input, args.to)
                .with_context(|| format!("preparing {} for the push", args.source))?;
            let opts = PushOptions {
                private: args.private,
                card: !args.no_card,
                message: args.message.clone(),
            };
            let report = hub::push(&prepared, &h, &config, &opts, &bars)
                .with_context(|| format!("pushing {} to {h}", args.source))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                match &report.commit_url {
                    Some(url) => println!(
                        "pushed {} to {h}: commit {} ({url}); {} file(s) sent, {} unchanged{}",
                        args.source,
                        report.commit_oid,
                        report.uploaded.len(),
                        report.unchanged.len(),
                        if report.card_written {
                            ", model card written"
                        } else {
                            ""
                        }
                    ),
                    None => println!(
                        "{h} already holds these files at {}; nothing to commit",
                        report.commit_oid
                    ),
                }
            }
        }
        RemoteRef::Oci(o) => {
            if args.to.is_some() {
                bail!("--to converts for Hub pushes; an OCI push sends the stored artifact unchanged (convert with `loratool convert ... --save` first)");
            }
            let opts = args.registry.options()?;
            let report = match as_store_ref(&args.source) {
                Some(r) => {
                    let store = super::registry::open_store()?;
                    oci::push(&store, &r, &o, &opts, &bars)
                }
                None => oci::push_path(std::path::Path::new(&args.source), &o, &opts, &bars),
            }
            .with_context(|| format!("pushing {} to {o}", args.source))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "pushed {} to {o}: {} ({} blob(s) sent, {} already there)",
                    args.source, report.digest, report.blobs_uploaded, report.blobs_skipped
                );
            }
        }
    }
    Ok(())
}
