//! Byte progress bars on stderr for remote transfers (one bar per file).

use super::progress::bytes_bar;
use indicatif::ProgressBar;
use std::cell::RefCell;

#[derive(Default)]
pub struct Bars {
    bar: RefCell<Option<ProgressBar>>,
}

impl crate::remote::Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        *self.bar.borrow_mut() = Some(bytes_bar(total.unwrap_or(0), label));
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(bytes);
        }
    }
    fn advance_back(&self, bytes: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.set_position(b.position().saturating_sub(bytes));
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}
