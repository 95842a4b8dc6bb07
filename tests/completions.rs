//! `loratool completions` and `loratool man` generate from the command-line definition: every
//! command appears, bash accepts the script's syntax, groff renders the page without warnings.

mod common;

use common::*;
use std::process::Command;

/// Every command, as `loratool --help` lists them.
fn commands() -> Vec<String> {
    let help = run_ok(&["--help"]);
    let list = help.split("Commands:").nth(1).expect("a command list");
    let names: Vec<String> = list
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    assert!(
        names.len() >= 19 && names.iter().any(|n| n == "check"),
        "{names:?}"
    );
    names
}

#[test]
fn completion_scripts_cover_every_command() {
    let names = commands();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = run_ok(&["completions", shell]);
        for n in &names {
            assert!(script.contains(n.as_str()), "{shell}: no {n}");
        }
        // an option of a subcommand, and a value list that comes from the library's names
        assert!(script.contains("tolerance"), "{shell}");
        assert!(script.contains("sv_fro"), "{shell}");
    }
    // bash parses the script
    let dir = tempdir();
    let p = dir.path().join("loratool.bash");
    std::fs::write(&p, run_ok(&["completions", "bash"])).unwrap();
    let o = Command::new("bash").arg("-n").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = loratool(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn man_pages_render() {
    let page = run_ok(&["man"]);
    assert!(page.contains(".TH loratool 1"), "{page}");
    let names = commands();
    for n in &names {
        assert!(page.contains(n.as_str()), "man page lacks {n}");
    }
    let dir = tempdir();
    run_ok(&["man", "-o", dir.path().to_str().unwrap()]);
    for n in &names {
        let p = dir.path().join(format!("loratool-{n}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|_| panic!("{}", p.display()));
        assert!(text.contains(&format!(".TH loratool-{n} 1")), "{n}");
    }
    let check = std::fs::read_to_string(dir.path().join("loratool-check.1")).unwrap();
    assert!(check.contains("tolerance") && check.contains("strict"));
    // groff renders it with warnings turned into errors (when groff is installed)
    if let Ok(o) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(dir.path().join("loratool-check.1"))
        .output()
    {
        assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    }
}
