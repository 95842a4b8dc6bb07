//! Scriptable defaults: merge/resize print a summary and the few modules that need attention
//! (one screen on a many-module adapter), the full table only with `--table`/`-v`, nothing but
//! errors with `--quiet`, and no progress bars or escape codes when stderr is not a terminal.

mod common;

use common::*;

/// The 350-module sd-scripts LoRA (SD 1.5 text encoder and UNet, convs included).
fn many() -> std::path::PathBuf {
    fixture("kohya/sd15_lora_r4_a2_c3lier.safetensors")
}

fn lines(o: &std::process::Output) -> usize {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o).lines().count()
}

#[test]
fn default_reports_fit_one_screen_and_the_table_lists_every_module() {
    let dir = tempdir();
    let out = dir.path().join("o.safetensors");
    let many = many();
    let other = fixture("kohya/sd15_lora_r8_a8_attn.safetensors");
    let resize = |extra: &[&str]| {
        let mut a = vec!["resize", s(&many), "--rank", "2", "-o", s(&out)];
        a.extend_from_slice(extra);
        loratool(&a)
    };
    let o = resize(&[]);
    let n = lines(&o);
    assert!(n <= 24, "{n} lines:\n{}", stdout(&o));
    // the listed modules are the five with the largest error, as the JSON report says
    let v: serde_json::Value = serde_json::from_str(&stdout(&resize(&["--json"]))).unwrap();
    let mut errs: Vec<(f64, String)> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["rel_error"].as_f64().unwrap(),
                m["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    errs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let text = stdout(&o);
    for (_, p) in &errs[..5] {
        assert!(text.contains(p.as_str()), "{p} missing:\n{text}");
    }
    assert!(!text.contains(errs[errs.len() - 1].1.as_str()));
    for flag in ["--table", "-v", "--verbose"] {
        assert!(lines(&resize(&[flag])) > 350, "{flag}");
    }

    let merge = |extra: &[&str]| {
        let mut a = vec![
            "merge",
            s(&many),
            s(&other),
            "--method",
            "svd",
            "--rank",
            "4",
            "-o",
            s(&out),
        ];
        a.extend_from_slice(extra);
        loratool(&a)
    };
    let n = lines(&merge(&[]));
    assert!(n <= 24, "{n} lines");
    assert!(lines(&merge(&["--table"])) > 350);
}

#[test]
fn quiet_prints_nothing_and_pipes_get_no_progress_bars() {
    let dir = tempdir();
    let out = dir.path().join("o.safetensors");
    let o = loratool(&[
        "resize",
        s(&many()),
        "--rank",
        "2",
        "-o",
        s(&out),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "");
    assert!(out.is_file());
    let o = loratool(&["-q", "check", s(&many())]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), String::new()));
    // --json still prints with --quiet (the caller asked for it)
    let o = loratool(&[
        "convert",
        s(&many()),
        "--to",
        "peft",
        "-o",
        s(&dir.path().join("p")),
        "-q",
        "--json",
    ]);
    assert!(serde_json::from_str::<serde_json::Value>(&stdout(&o)).is_ok());
    // stderr is a pipe here: no bar, no escape code, on either stream
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_loratool"))
        .args(["merge", s(&many()), s(&many()), "-o", s(&out)])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(!stderr(&o).contains('\u{1b}') && !stdout(&o).contains('\u{1b}'));
    assert!(!stderr(&o).contains("modules ("), "{}", stderr(&o));
}
