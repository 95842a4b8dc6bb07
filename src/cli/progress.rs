//! The terminal observer: warnings on stderr, progress bars on stderr (indicatif draws them
//! only when stderr is a terminal).

use crate::app::{Observer, Progress, Unit};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Terminal;

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
