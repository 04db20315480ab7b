//! Live heap accounting: how many bytes the process has allocated and not
//! yet freed, which is what a memory limit should compare (as the Go
//! collector's limiter reads the heap in use, not the resident set).
//!
//! The resident set size stays high after a burst, because an allocator
//! does not give freed memory back at once; a limiter reading it keeps
//! refusing long after the memory is free. [`CountingAllocator`] wraps the
//! global allocator and keeps the live count; the binary installs it, and
//! an embedding program may too:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: otelcol_core::memory::CountingAllocator<std::alloc::System> =
//!     otelcol_core::memory::CountingAllocator(std::alloc::System);
//! ```
//!
//! Without it, [`live_heap_bytes`] answers `None` and callers fall back to
//! the resident set.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Counters are spread over this many cache lines, one chosen per thread,
/// so that threads allocating at once do not fight over one line.
const SLOTS: usize = 32;

#[repr(align(128))]
struct Slot(AtomicIsize);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Slot = Slot(AtomicIsize::new(0));
static LIVE: [Slot; SLOTS] = [ZERO; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // A const-initialised cell without a destructor: reading it never
    // allocates, which matters inside the allocator.
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn slot() -> &'static AtomicIsize {
    let i = THREAD_SLOT
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    &LIVE[i].0
}

fn note(delta: isize) {
    slot().fetch_add(delta, Ordering::Relaxed);
}

/// A global allocator that counts live bytes, around any other allocator
/// (`std::alloc::System`, or mimalloc with the binary's `mimalloc` feature).
#[derive(Debug, Default)]
pub struct CountingAllocator<A>(pub A);

// SAFETY: every call is forwarded unchanged to the inner allocator; the
// wrapper only adds the sizes of successful calls to counters.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.0.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Bytes allocated and not yet freed, when a [`CountingAllocator`] is the
/// global allocator; `None` otherwise (nothing has been counted).
pub fn live_heap_bytes() -> Option<u64> {
    let total: i64 = LIVE
        .iter()
        .map(|s| s.0.load(Ordering::Relaxed) as i64)
        .sum();
    u64::try_from(total).ok().filter(|n| *n > 0)
}

/// The process's resident set size in bytes (`VmRSS`), where `/proc` has it.
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Asks the allocator to give freed memory back to the system, so the
/// resident set follows the live heap down after a burst. Returns whether
/// the platform has a way to (glibc's `malloc_trim`); elsewhere a no-op.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and is safe to call at any
        // time from any thread; it only returns free pages to the kernel.
        unsafe { malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Blocks at least this large get pages of their own from the system
/// (glibc's `M_MMAP_THRESHOLD`, set by [`keep_large_blocks_apart`]), given
/// back the moment they are freed.
pub const LARGE_BLOCK_BYTES: usize = 1 << 20;

/// Free memory at the end of an allocator arena that glibc keeps for reuse
/// rather than give back at once (`M_TRIM_THRESHOLD`, set by
/// [`keep_large_blocks_apart`]).
pub const ARENA_KEEP_BYTES: usize = 4 << 20;

/// Sets glibc's malloc so that the memory of a burst of large requests goes
/// back to the system when they are freed, without giving back (and
/// faulting in again) every freed block of a few hundred KiB. Call it once,
/// first thing in `main`, when the system allocator is the global one.
/// Returns whether it set anything.
///
/// glibc starts by mapping blocks of 128 KiB and more on their own, but each
/// time such a block is freed it raises that threshold to the block's size
/// (up to 32 MiB) and the trim threshold to twice that. After one 18 MB
/// request body the next ones come from the per-thread arenas, whose free
/// tail of up to 36 MiB each stays resident: `free` keeps it below the trim
/// threshold, and `malloc_trim` ([`release_free_memory`]) trims only the
/// main arena's. Fixing the mmap threshold at [`LARGE_BLOCK_BYTES`] alone
/// left the trim threshold at its 128 KiB start: every freed durable-log
/// record (~0.5 MB) then gave its pages back and the next one faulted them
/// in again (system CPU 24% instead of 15%, durable bulk 1.06-1.14 M points/s
/// instead of 1.31-1.40 M), hence [`ARENA_KEEP_BYTES`] too.
///
/// Measured with `collector-bin/tests/memory_burst.rs` (8 connections of
/// 18 MB bodies, the limiter at 256 MiB, a CPU hog on both cores): with
/// glibc's defaults the resident set after the burst was 58-129 MiB against
/// a 38-39 MiB start and peaked at 315-407 MiB; with these settings 48-53
/// MiB against 39-40, peak 206-218 MiB.
///
/// An operator's own setting wins: nothing is changed when
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is set or
/// `GLIBC_TUNABLES` names `mmap_threshold` or `trim_threshold`. Elsewhere
/// than glibc, a no-op.
pub fn keep_large_blocks_apart() -> bool {
    let operator_set = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        || std::env::var("GLIBC_TUNABLES")
            .is_ok_and(|t| t.contains("mmap_threshold") || t.contains("trim_threshold"));
    if operator_set {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt takes no pointers; these two settings only change
        // where later allocations come from and when free memory is given
        // back (and turn glibc's dynamic thresholds off). Both values fit
        // an i32.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES as i32) == 1
                && mallopt(M_TRIM_THRESHOLD, ARENA_KEEP_BYTES as i32) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_follows_allocations_through_the_wrapper() {
        // The test binary's allocator is not the counting one: drive the
        // wrapper by hand and read the counters it moves.
        let a = CountingAllocator(std::alloc::System);
        let before: i64 = LIVE
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed) as i64)
            .sum();
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: a valid non-zero layout; the pointer is freed below with it.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        let during: i64 = LIVE
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed) as i64)
            .sum();
        assert_eq!(during - before, 1 << 20);
        // SAFETY: `p` came from `a.alloc(layout)`.
        let p = unsafe { a.realloc(p, layout, 3 << 20) };
        assert!(!p.is_null());
        let grown: i64 = LIVE
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed) as i64)
            .sum();
        assert_eq!(grown - before, 3 << 20);
        // SAFETY: `p` is the reallocated block of 3 MiB.
        unsafe { a.dealloc(p, Layout::from_size_align(3 << 20, 8).unwrap()) };
        let after: i64 = LIVE
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed) as i64)
            .sum();
        assert_eq!(after, before);
        assert!(resident_bytes().unwrap() > 1 << 20);
    }
}
