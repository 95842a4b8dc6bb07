//! The harness every fuzz target shares: [`alloc`] bounds each allocation and the peak of live
//! bytes by the input's length while the library runs (so a size taken from a header before it
//! is checked against the file aborts the run), [`scratch`] gives readers that take paths a
//! file on tmpfs, and [`compare`] checks read → write → read round trips.
//!
//! A target is one small file in `fuzz_targets/`: `fuzz_target!(|data: &[u8]| run(data, body))`.

pub mod alloc;
pub mod compare;
pub mod readers;
pub mod scratch;

pub use compare::{assert_same_adapter, Tolerance};
pub use scratch::Scratch;

/// Run `body` on one input with the allocation bounds of [`alloc`] armed and a clean scratch
/// directory.
pub fn run(data: &[u8], body: impl FnOnce(&[u8], &Scratch)) {
    run_with(data, alloc::bound, body)
}

/// [`run`] with the quadratic bound of [`alloc::bound_quadratic`] (LyCORIS conversions).
pub fn run_quadratic(data: &[u8], body: impl FnOnce(&[u8], &Scratch)) {
    run_with(data, alloc::bound_quadratic, body)
}

fn run_with(data: &[u8], arm: fn(usize) -> alloc::Bound, body: impl FnOnce(&[u8], &Scratch)) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // reporting a panic (a backtrace) allocates freely: disarm the bounds first
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            alloc::disarm();
            report(info)
        }));
    });
    let scratch = Scratch::get();
    scratch.clear();
    {
        let _bound = arm(data.len());
        body(data, scratch);
    }
    scratch.clear();
}

/// An error from reading `path` must say which file it is about.
#[track_caller]
pub fn assert_names_file(err: &dyn std::fmt::Display, path: &std::path::Path) {
    let text = err.to_string();
    let shown = path.display().to_string();
    assert!(
        text.contains(&shown),
        "the error does not name the file {shown}: {text}"
    );
}
