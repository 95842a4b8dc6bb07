//! `loratool pull <hf://...|oci://...>`: arguments and rendering; the work is `app::remote`.

use anyhow::{Context, Result};
use clap::Args;

use super::args::{JsonArg, SaveArgs};
use super::push::RegistryArgs;
use crate::app::remote::{PullOutcome, PullRequest};
use crate::app::Session;
use crate::remote::RemoteRef;

#[derive(Args)]
pub struct PullArgs {
    /// hf://owner/name[@revision][/subfolder] or oci://host[:port]/repository[:tag|@digest].
    pub source: String,
    /// Store it as namespace/name:tag (Hub: in addition to the Hugging Face cache; OCI: instead
    /// of the name taken from the repository).
    #[command(flatten)]
    pub save: SaveArgs,
    /// Hub: the file to take (relative to the subfolder) when the repository holds several.
    #[arg(long)]
    pub file: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub json: JsonArg,
}

pub fn run(session: &Session<'_>, args: PullArgs) -> Result<()> {
    let source = RemoteRef::parse(&args.source)
        .context("expected hf://owner/name or oci://host/repository:tag")??;
    let outcome = session.pull(&PullRequest {
        source,
        save: args.save.reference()?,
        file: args.file.clone(),
        oci: args.registry.options()?,
    })?;
    if args.json.json {
        return super::print_json(&outcome);
    }
    if super::quiet() {
        return Ok(());
    }
    match &outcome {
        PullOutcome::Hub(p) => {
            println!("{} -> {}", p.pinned, p.path.display());
            if let (Some(r), Some(d)) = (&p.saved_as, &p.digest) {
                println!("saved {r} {d}");
            }
        }
        PullOutcome::Oci(r) => println!(
            "pulled {} as {} {} ({} blob(s) downloaded, {} already stored)",
            args.source, r.saved_as, r.digest, r.blobs_downloaded, r.blobs_present
        ),
    }
    Ok(())
}
