//! A counting allocator: the heap bytes each thread allocated and has not freed, and their
//! peak, so a target can measure what a decoder held at most.
//!
//! It wraps the system allocator (which AddressSanitizer intercepts as usual) and keeps two
//! counters per thread, so targets running on parallel test threads do not see each
//! other's allocations. A decoder runs on the caller's thread, so the peak seen during a
//! call is the call's own. Whoever runs the targets installs it:
//! `#[global_allocator] static A: Counting = Counting;` (the cargo-fuzz crate's library and
//! the replay test do); without it every peak reads zero.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting.
#[derive(Debug)]
pub struct Counting;

thread_local! {
    // Constant-initialised and without destructors: reading them never allocates, and they
    // stay readable while the thread's other locals are torn down.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    let live = LIVE.with(|live| {
        let now = live.get().saturating_add(bytes);
        live.set(now);
        now
    });
    PEAK.with(|peak| peak.set(peak.get().max(live)));
}

fn shrank(bytes: usize) {
    // A block freed by another thread than its allocator's makes this thread's count go
    // below what it allocated itself; peaks are taken relative to a start, so that is fine.
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    LIVE.with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is forwarded to `System` unchanged; the counters do not affect the
// memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as the new block live next to the old one, as a copy would be.
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

/// Runs `f` and returns its result with the most heap this thread held during it above
/// what was live when it started (what it freed again counts too, at its peak).
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = f();
    let peak = PEAK.with(Cell::get).saturating_sub(start);
    (result, usize::try_from(peak).unwrap_or(0))
}
