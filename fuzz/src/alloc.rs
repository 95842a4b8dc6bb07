//! A global allocator that counts. While a [`Bound`] is held, any single allocation larger than
//! `SINGLE_PER_BYTE · input length + SINGLE_SLACK`, or live bytes growing by more than
//! `PEAK_PER_BYTE · input length + PEAK_SLACK` over what was live when the bound was armed,
//! aborts the process (libFuzzer records the input as a crash).
//!
//! The factors leave room for what the library legitimately does with `n` input bytes: decode
//! 2-byte floats to f32 (2×), dequantize Q2_K blocks to f32 (12.2×), hold an adapter, its
//! re-encoded copy and the copy read back. The slack covers fixed buffers (the 1 MiB write
//! buffer, the regex compiler). An allocation sized by a header field is typically gigabytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

pub const SINGLE_PER_BYTE: usize = 16;
pub const SINGLE_SLACK: usize = 8 << 20;
pub const PEAK_PER_BYTE: usize = 64;
pub const PEAK_SLACK: usize = 32 << 20;

static SINGLE_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static PEAK_LIMIT: AtomicIsize = AtomicIsize::new(isize::MAX);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static BASELINE: AtomicIsize = AtomicIsize::new(0);

pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bounds armed for one input; disarmed on drop.
pub struct Bound(());

pub fn bound(input_len: usize) -> Bound {
    let single = input_len
        .saturating_mul(SINGLE_PER_BYTE)
        .saturating_add(SINGLE_SLACK);
    let peak = input_len
        .saturating_mul(PEAK_PER_BYTE)
        .saturating_add(PEAK_SLACK);
    bound_bytes(single, peak)
}

/// The bound of a reader whose output is legitimately quadratic in its input: a LyCORIS LoKr
/// module's exact LoRA has `rank(W₁)·rank(W₂)` columns, so `n` bytes of Kronecker factors can
/// become ~`n²/16` bytes of LoRA (a real 9.3 KB SD 1.5 LoKr file makes a 64 MiB allocation).
/// `n²` bytes for one allocation and `4·n²` live, capped at 1 GiB / 2 GiB (fuzz inputs are
/// small, so the caps only bind on the crafted expansions they are there to catch).
pub fn bound_quadratic(input_len: usize) -> Bound {
    let sq = input_len.saturating_mul(input_len);
    bound_bytes(
        sq.saturating_add(SINGLE_SLACK).min(1 << 30),
        sq.saturating_mul(4).saturating_add(PEAK_SLACK).min(2 << 30),
    )
}

fn bound_bytes(single: usize, peak: usize) -> Bound {
    BASELINE.store(LIVE.load(Relaxed), Relaxed);
    PEAK_LIMIT.store(isize::try_from(peak).unwrap_or(isize::MAX), Relaxed);
    SINGLE_LIMIT.store(single, Relaxed);
    Bound(())
}

impl Drop for Bound {
    fn drop(&mut self) {
        disarm();
    }
}

/// Lift the bounds (also done when a panic is being reported).
pub fn disarm() {
    SINGLE_LIMIT.store(usize::MAX, Relaxed);
    PEAK_LIMIT.store(isize::MAX, Relaxed);
}

/// Print without allocating, then abort.
fn fail(what: &str, size: usize, limit: usize) -> ! {
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.b.len() - self.n);
            self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
            self.n += take;
            Ok(())
        }
    }
    let mut buf = Buf { b: [0; 256], n: 0 };
    let _ = std::fmt::Write::write_fmt(
        &mut buf,
        format_args!("\n==loratool-fuzz== {what}: {size} bytes, bound {limit} for this input\n"),
    );
    let _ = std::io::stderr().write_all(&buf.b[..buf.n]);
    std::process::abort();
}

#[inline]
fn on_grow(size: usize, grow: usize) {
    let single = SINGLE_LIMIT.load(Relaxed);
    if size > single {
        // disarm first: the abort path must not re-enter the check
        SINGLE_LIMIT.store(usize::MAX, Relaxed);
        fail("single allocation over the bound", size, single);
    }
    let live = LIVE.fetch_add(grow as isize, Relaxed) + grow as isize;
    let peak = PEAK_LIMIT.load(Relaxed);
    if peak != isize::MAX && live - BASELINE.load(Relaxed) > peak {
        PEAK_LIMIT.store(isize::MAX, Relaxed);
        SINGLE_LIMIT.store(usize::MAX, Relaxed);
        fail(
            "live bytes over the bound",
            (live - BASELINE.load(Relaxed)) as usize,
            peak as usize,
        );
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_grow(layout.size(), layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_grow(layout.size(), layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            on_grow(new_size, new_size - layout.size());
        } else {
            LIVE.fetch_sub((layout.size() - new_size) as isize, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}
