//! A caching allocator for large blocks, so that a warm training step takes most of its memory
//! from a cache instead of fresh pages from the operating system.
//!
//! Why: every layer's forward allocates its output and its cache, and every backward its
//! gradients: tens of tensors of up to tens of MiB per step. The system allocator serves blocks
//! that large with fresh `mmap`s and returns them with `munmap` when they are freed, so each step
//! pays a page fault and a page clear for every 4 KiB it writes, and a TLB shootdown across the
//! cores for every block it frees (`perf` on a `seed` step at batch 64 put 12 to 15% of the
//! samples in the kernel for that). Reusing buffers by hand in every layer would thread
//! workspaces through every signature; a caching allocator, like PyTorch's for CUDA memory, gives
//! the same effect behind the ordinary `Vec`.
//!
//! How: a block of [`MIN_CACHED`] bytes or more is rounded up to its size class (32 classes per
//! power of two, so at most 3.2% is wasted) and, when freed, kept on its class's free list instead
//! of going back to the system; the next request of that class takes it (zeroing it first if the
//! request asks for zeroed memory). Smaller blocks, and the rare ones that need an alignment above
//! [`ALIGN`], go straight to the system allocator. A step repeats the same shapes, so after the
//! first step most large requests are served from the lists.
//!
//! The cache never makes the process hold more than its largest live set (plus the block being
//! allocated): when a request its class cannot serve would push the blocks held past that, the
//! least recently freed blocks of other classes go back to the system first (`release_oldest`). Measured on the seed at batch 64 (`trainer bench`): without that rule a
//! warm step took no block from the system but the process held 2,045 MiB of large blocks for
//! 1,682 MiB live (peak RSS 1,992 MiB); with it, 95 of a step's 164 large blocks come from the
//! system (32,000 page faults, 126 MiB, about 1% of the step) and the peak RSS is 1,811 MiB.
//! [`stats`] counts both kinds, and `trainer bench` prints them per warm step.
//!
//! The free lists are intrusive (a freed block stores the pointer to the next one, and when it
//! was freed, in its first bytes), so the allocator never allocates for itself, and one mutex guards them: large requests
//! are a few hundred per step, so it is never contended. [`trim`] returns every cached block to
//! the system (for a long-lived process that moves on to other work).
//!
//! Install it in a binary with
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: tensor_core::alloc::CachingAlloc = tensor_core::alloc::CachingAlloc;
//! ```
//! Without that, [`stats`] stays at zero and nothing else changes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The smallest block the cache keeps: 256 KiB. Smaller ones are cheap for the system allocator
/// (its arenas serve them without system calls).
pub const MIN_CACHED: usize = 256 * 1024;

/// The alignment of every cached block (a cache line; the widest SIMD load is 64 bytes).
/// Requests that need more bypass the cache.
pub const ALIGN: usize = 64;

/// Size classes per power of two (a power of two itself).
const SUBCLASSES: usize = 32;
const SUBCLASS_BITS: usize = SUBCLASSES.trailing_zeros() as usize;

/// Classes cover MIN_CACHED (2^18) up to 2^48 bytes.
const CLASSES: usize = (48 - 18) * SUBCLASSES;

/// The allocator: a zero-sized handle to the process's one cache (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CachingAlloc;

/// Counters of the cache since the process started (all zero if [`CachingAlloc`] is not the
/// global allocator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Large blocks taken from the system allocator.
    pub system_allocs: u64,
    /// Large requests served from the free lists.
    pub reused: u64,
    /// Bytes held in the free lists now.
    pub cached_bytes: u64,
    /// Bytes of large blocks in use now (their classes' sizes).
    pub live_bytes: u64,
    /// The most `live_bytes` has been since the process started or [`reset_peak`].
    pub peak_live_bytes: u64,
}

/// The free lists: one intrusive singly-linked list per class.
struct FreeLists {
    heads: [*mut u8; CLASSES],
    cached_bytes: u64,
    /// Counts frees: each cached block records when it was freed, so the oldest can go first.
    tick: u64,
}

/// What a cached block holds in its first bytes.
#[repr(C)]
struct Header {
    next: *mut u8,
    freed_at: u64,
}

// SAFETY: the raw pointers are blocks owned by the cache, only touched under the mutex.
unsafe impl Send for FreeLists {}

static LISTS: Mutex<FreeLists> = Mutex::new(FreeLists {
    heads: [ptr::null_mut(); CLASSES],
    cached_bytes: 0,
    tick: 0,
});
static SYSTEM_ALLOCS: AtomicU64 = AtomicU64::new(0);
static REUSED: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK_LIVE: AtomicU64 = AtomicU64::new(0);

/// Counts a block of `size` bytes handed out.
fn add_live(size: usize) {
    let live = LIVE.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
    PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
}

/// The class of a request of `size` bytes (`size >= MIN_CACHED`) and the block size it rounds to:
/// with 2^e <= size < 2^(e+1), the class splits [2^e, 2^(e+1)) into SUBCLASSES steps.
fn class_of(size: usize) -> Option<(usize, usize)> {
    debug_assert!(size >= MIN_CACHED);
    let e = usize::BITS as usize - 1 - size.leading_zeros() as usize;
    let step = 1usize << (e - SUBCLASS_BITS);
    let sub = (size - (1 << e)).div_ceil(step);
    // sub == SUBCLASSES rounds up to the next power of two, the first class of e + 1.
    let (e, sub) = if sub == SUBCLASSES {
        (e + 1, 0)
    } else {
        (e, sub)
    };
    let class = (e - 18) * SUBCLASSES + sub;
    (class < CLASSES).then(|| (class, class_size(class)))
}

/// The block size of `class`.
fn class_size(class: usize) -> usize {
    let e = class / SUBCLASSES + 18;
    (1usize << e) + (class % SUBCLASSES) * (1usize << (e - SUBCLASS_BITS))
}

/// Whether the cache handles `layout`, and if so its class and block layout.
fn cached_layout(layout: Layout) -> Option<(usize, Layout)> {
    if layout.size() < MIN_CACHED || layout.align() > ALIGN {
        return None;
    }
    let (class, size) = class_of(layout.size())?;
    Some((class, Layout::from_size_align(size, ALIGN).ok()?))
}

fn lock() -> std::sync::MutexGuard<'static, FreeLists> {
    // A panic while the lock is held cannot leave the lists half-updated (each update is one
    // pointer write and one counter write), so a poisoned lock is still usable.
    LISTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a block of `class` off its free list, if any.
fn pop(class: usize, size: usize) -> Option<*mut u8> {
    let mut lists = lock();
    let head = lists.heads[class];
    if head.is_null() {
        return None;
    }
    // SAFETY: every listed block is at least MIN_CACHED bytes, ALIGN-aligned, and starts with
    // the header written by `push`.
    lists.heads[class] = unsafe { (*head.cast::<Header>()).next };
    lists.cached_bytes -= size as u64;
    Some(head)
}

/// Puts a freed block of `class` on its free list.
fn push(class: usize, size: usize, block: *mut u8) {
    let mut lists = lock();
    lists.tick += 1;
    let header = Header {
        next: lists.heads[class],
        freed_at: lists.tick,
    };
    // SAFETY: the block is ours (freed by its owner), large and aligned enough for a header.
    unsafe { block.cast::<Header>().write(header) };
    lists.heads[class] = block;
    lists.cached_bytes += size as u64;
}

/// Called when a request its class cannot serve is about to take a new block from the system:
/// if the blocks held (live, counting the new one, plus cached) would then exceed the largest
/// live set so far, returns the least recently freed cached blocks to the system until they no
/// longer do (or the lists are empty). So the cache never makes the process hold more than its
/// largest live set plus one block, and it keeps every block while it holds less. (Without
/// this, the cache held up to a fifth more than the largest live set: the seed at batch 64 held
/// 2,045 MiB for 1,682 MiB live.) The blocks freed longest ago are the ones least likely to be
/// asked for soon; when they are, they come from the system again.
fn release_oldest() {
    let mut lists = lock();
    let held = LIVE.load(Ordering::Relaxed) + lists.cached_bytes;
    let excess = held.saturating_sub(PEAK_LIVE.load(Ordering::Relaxed));
    if excess == 0 {
        return;
    }
    let need = excess.min(lists.cached_bytes) as usize;
    let mut released = 0u64;
    while released < need as u64 {
        // The oldest block: the smallest `freed_at` over every list, with its predecessor.
        let mut oldest: Option<(usize, *mut u8, *mut u8, u64)> = None;
        for (class, &head) in lists.heads.iter().enumerate() {
            let (mut prev, mut node) = (ptr::null_mut::<u8>(), head);
            while !node.is_null() {
                // SAFETY: listed blocks start with the header `push` wrote.
                let h = unsafe { &*node.cast::<Header>() };
                if oldest.is_none_or(|o| h.freed_at < o.3) {
                    oldest = Some((class, prev, node, h.freed_at));
                }
                (prev, node) = (node, h.next);
            }
        }
        let Some((class, prev, node, _)) = oldest else {
            break;
        };
        // SAFETY: `node` is listed in `class` after `prev` (or first); it is unlinked, then
        // given back with the layout it was allocated with.
        unsafe {
            let next = (*node.cast::<Header>()).next;
            if prev.is_null() {
                lists.heads[class] = next;
            } else {
                (*prev.cast::<Header>()).next = next;
            }
            let size = class_size(class);
            System.dealloc(node, Layout::from_size_align_unchecked(size, ALIGN));
            released += size as u64;
        }
    }
    lists.cached_bytes -= released;
}

impl CachingAlloc {
    fn take(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let Some((class, block)) = cached_layout(layout) else {
            // SAFETY: forwarded unchanged.
            return unsafe {
                if zeroed {
                    System.alloc_zeroed(layout)
                } else {
                    System.alloc(layout)
                }
            };
        };
        add_live(block.size());
        if let Some(p) = pop(class, block.size()) {
            REUSED.fetch_add(1, Ordering::Relaxed);
            if zeroed {
                // SAFETY: the block has block.size() >= layout.size() bytes.
                unsafe { ptr::write_bytes(p, 0, layout.size()) };
            }
            return p;
        }
        release_oldest();
        SYSTEM_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: block has a non-zero size.
        unsafe {
            if zeroed {
                System.alloc_zeroed(block)
            } else {
                System.alloc(block)
            }
        }
    }
}

// SAFETY: every pointer handed out is either the system allocator's for the caller's layout, or a
// block of the caller's size class (at least as large, ALIGN-aligned) that no one else holds; a
// block is freed with the layout it was allocated with (the class is a function of the size).
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.take(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.take(layout, true)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match cached_layout(layout) {
            Some((class, block)) => {
                LIVE.fetch_sub(block.size() as u64, Ordering::Relaxed);
                push(class, block.size(), p)
            }
            None => System.dealloc(p, layout),
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (cached_layout(layout), cached_layout(new_layout)) {
            (None, None) => System.realloc(p, layout, new_size),
            // The same class: the block already has room.
            (Some((a, _)), Some((b, _))) if a == b => p,
            _ => {
                let q = self.alloc(new_layout);
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
                q
            }
        }
    }
}

/// The cache's counters now.
pub fn stats() -> Stats {
    Stats {
        system_allocs: SYSTEM_ALLOCS.load(Ordering::Relaxed),
        reused: REUSED.load(Ordering::Relaxed),
        cached_bytes: lock().cached_bytes,
        live_bytes: LIVE.load(Ordering::Relaxed),
        peak_live_bytes: PEAK_LIVE.load(Ordering::Relaxed),
    }
}

/// Starts a new peak of [`Stats::peak_live_bytes`] from the bytes live now.
pub fn reset_peak() {
    PEAK_LIVE.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Returns every cached block to the system allocator; returns the bytes released.
pub fn trim() -> u64 {
    let mut lists = lock();
    let mut released = 0;
    for (class, head) in lists.heads.iter_mut().enumerate() {
        let size = class_size(class);
        let layout = Layout::from_size_align(size, ALIGN).expect("class sizes are valid layouts");
        while !head.is_null() {
            let block = *head;
            // SAFETY: listed blocks start with the header `push` wrote and were allocated from
            // System with exactly this layout.
            unsafe {
                *head = (*block.cast::<Header>()).next;
                System.dealloc(block, layout);
            }
            released += size as u64;
        }
    }
    lists.cached_bytes -= released;
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_a_thirty_second_and_are_monotonic() {
        let mut prev = (0, 0);
        for size in (MIN_CACHED..64 << 20).step_by(4093) {
            let (class, block) = class_of(size).unwrap();
            assert!(block >= size, "{size} -> {block}");
            assert!((block - size) * SUBCLASSES <= size, "{size} -> {block}");
            assert!(class >= prev.0 && block >= prev.1);
            prev = (class, block);
        }
        assert_eq!(class_of(MIN_CACHED), Some((0, MIN_CACHED)));
        let first_step = MIN_CACHED / SUBCLASSES;
        assert_eq!(class_of(MIN_CACHED + 1), Some((1, MIN_CACHED + first_step)));
        // Just past the last subclass of 2^18 rounds to 2^19, the first class of the next power.
        assert_eq!(class_of((1 << 19) - 1), Some((SUBCLASSES, 1 << 19)));
    }

    #[test]
    fn small_or_overaligned_requests_bypass_the_cache() {
        assert!(cached_layout(Layout::from_size_align(MIN_CACHED - 1, 4).unwrap()).is_none());
        assert!(cached_layout(Layout::from_size_align(MIN_CACHED, 128).unwrap()).is_none());
        let (_, block) = cached_layout(Layout::from_size_align(MIN_CACHED, 64).unwrap()).unwrap();
        assert_eq!(block.align(), ALIGN);
    }
}
