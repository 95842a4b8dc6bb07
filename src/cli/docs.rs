//! `loratool completions <shell>` and `loratool man`: shell completion scripts and roff man
//! pages generated from the command-line definition itself, so they cannot drift from it.

use clap::{Args, CommandFactory, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete in. Install, e.g.: bash `loratool completions bash >
    /// ~/.local/share/bash-completion/completions/loratool`; zsh: into a directory on $fpath
    /// as `_loratool`; fish: `~/.config/fish/completions/loratool.fish`; PowerShell: add
    /// `loratool completions powershell | Out-String | Invoke-Expression` to $PROFILE.
    pub shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write `loratool.1` and one `loratool-<command>.1` per command into this directory
    /// instead of printing `loratool.1` on stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    use clap_complete::shells;
    let mut cmd = super::Cli::command();
    let mut out = std::io::stdout().lock();
    let name = "loratool";
    match args.shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut cmd, name, &mut out),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut cmd, name, &mut out),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut cmd, name, &mut out),
        Shell::Powershell => clap_complete::generate(shells::PowerShell, &mut cmd, name, &mut out),
        Shell::Elvish => clap_complete::generate(shells::Elvish, &mut cmd, name, &mut out),
    }
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let cmd = super::Cli::command();
    match args.output {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => {
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}
