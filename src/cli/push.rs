//! `loratool push <store-ref|path> <hf://...|oci://...>`: arguments and rendering; the work is
//! `app::remote`.

use anyhow::{bail, Context, Result};
use clap::Args;

use super::args::{named, JsonArg};
use crate::adapter::Format;
use crate::app::remote::{PushOutcome, PushRequest};
use crate::app::Session;
use crate::remote::oci::{auth::Credentials, OciOptions};
use crate::remote::RemoteRef;

#[derive(Args)]
pub struct PushArgs {
    /// A stored adapter (namespace/name:tag, name@sha256:...) or a path.
    pub source: String,
    /// Where to: hf://owner/name[@branch][/subfolder] or oci://host[:port]/repository:tag.
    pub dest: String,
    /// Convert to this format on the way (Hub only): peft, diffusers, kohya.
    #[arg(long, value_parser = named::<Format>())]
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
    #[command(flatten)]
    pub json: JsonArg,
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

pub fn run(session: &Session<'_>, args: PushArgs) -> Result<()> {
    let dest = RemoteRef::parse(&args.dest)
        .context("the destination must be hf://owner/name or oci://host/repository:tag")??;
    let outcome = session.push(&PushRequest {
        source: args.source.clone(),
        dest,
        to: args.to,
        private: args.private,
        card: !args.no_card,
        message: args.message.clone(),
        oci: args.registry.options()?,
    })?;
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    match &outcome {
        PushOutcome::Hub(report) => match &report.commit_url {
            Some(url) => println!(
                "pushed {} to {}: commit {} ({url}); {} file(s) sent, {} unchanged{}",
                args.source,
                args.dest,
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
                "{} already holds these files at {}; nothing to commit",
                args.dest, report.commit_oid
            ),
        },
        PushOutcome::Oci(report) => println!(
            "pushed {} to {}: {} ({} blob(s) sent, {} already there)",
            args.source, args.dest, report.digest, report.blobs_uploaded, report.blobs_skipped
        ),
    }
    Ok(())
}
