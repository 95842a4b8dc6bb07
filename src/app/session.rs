//! What one run shares: the store's location, the observer that hears warnings and progress,
//! and the threading setup every entry point needs.

use super::error::Result;
use crate::registry::Store;
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Once;

/// What a progress counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Modules,
}

/// A running progress counter; finished when dropped.
pub trait Progress: Send + Sync {
    fn advance(&self, n: u64);
    /// Take back `n` units (a download that restarts from zero).
    fn rewind(&self, _n: u64) {}
}

impl Progress for () {
    fn advance(&self, _n: u64) {}
}

/// Who hears what happens during a run. Every method has a silent default.
pub trait Observer: Sync {
    /// Something the user should know that is not an error (a skipped key, a copied file).
    fn warn(&self, _message: &str) {}
    /// A task of `total` units starts (`label`: "reading", "merging", "writing", ...).
    fn progress(&self, _label: &str, _total: u64, _unit: Unit) -> Box<dyn Progress + '_> {
        Box::new(())
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

static SILENT: Silent = Silent;

/// One run's shared settings.
pub struct Session<'o> {
    store_root: Option<PathBuf>,
    observer: &'o dyn Observer,
}

impl Default for Session<'static> {
    fn default() -> Self {
        Session::new()
    }
}

impl Session<'static> {
    /// The default store (`$LORATOOL_HOME`, else the XDG data directory), no observer.
    pub fn new() -> Session<'static> {
        setup_threads();
        Session {
            store_root: None,
            observer: &SILENT,
        }
    }
}

impl<'o> Session<'o> {
    /// The same session reporting to `observer`.
    pub fn with_observer<'p>(self, observer: &'p dyn Observer) -> Session<'p> {
        Session {
            store_root: self.store_root,
            observer,
        }
    }

    /// The same session with the store at `root`.
    pub fn with_store_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.store_root = Some(root.into());
        self
    }

    pub fn observer(&self) -> &'o dyn Observer {
        self.observer
    }

    pub(crate) fn warn_all(&self, warnings: &[String]) {
        for w in warnings {
            self.observer.warn(w);
        }
    }

    /// Open (creating if needed) the session's store.
    pub fn store(&self) -> Result<Store> {
        let root = match &self.store_root {
            Some(r) => r.clone(),
            None => Store::default_root()?,
        };
        Ok(Store::open(&root)?)
    }
}

/// loratool parallelises over modules, rows and tensors with rayon; faer's own threads inside
/// each small per-module kernel would only oversubscribe the same cores.
fn setup_threads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| faer::set_global_parallelism(faer::Par::Seq));
}

/// Transfers' byte progress, shown through the session's observer (one counter per file).
pub(super) struct Bars<'o> {
    observer: &'o dyn Observer,
    current: RefCell<Option<Box<dyn Progress + 'o>>>,
}

impl<'o> Bars<'o> {
    pub(super) fn new(observer: &'o dyn Observer) -> Self {
        Bars {
            observer,
            current: RefCell::new(None),
        }
    }
}

impl crate::remote::Progress for Bars<'_> {
    fn start(&self, label: &str, total: Option<u64>) {
        *self.current.borrow_mut() = Some(self.observer.progress(
            label,
            total.unwrap_or(0),
            Unit::Bytes,
        ));
    }
    fn advance(&self, bytes: u64) {
        if let Some(p) = self.current.borrow().as_ref() {
            p.advance(bytes);
        }
    }
    fn advance_back(&self, bytes: u64) {
        if let Some(p) = self.current.borrow().as_ref() {
            p.rewind(bytes);
        }
    }
    fn finish(&self) {
        self.current.borrow_mut().take();
    }
}
