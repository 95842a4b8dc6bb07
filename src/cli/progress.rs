//! The terminal observer: warnings on stderr, progress bars on stderr only when stderr is a
//! terminal (never in pipes, logs or CI) and `--quiet` is not given. Nothing is coloured, and
//! `NO_COLOR` turns off any colour the libraries would add (clap's help and errors).

use crate::app::{Observer, Progress, Unit};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Terminal {
    bars: bool,
}

impl Terminal {
    pub fn new(quiet: bool) -> Terminal {
        Terminal {
            bars: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn rewind(&self, n: u64) {
        self.0.set_position(self.0.position().saturating_sub(n));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Observer for Terminal {
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn progress(&self, label: &str, total: u64, unit: Unit) -> Box<dyn Progress + '_> {
        if !self.bars {
            return Box::new(());
        }
        let bar = ProgressBar::new(total);
        let template = match unit {
            Unit::Bytes => "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            Unit::Modules => "{msg} [{bar:40}] {pos}/{len} modules ({eta})",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Box::new(Bar(bar))
    }
}
