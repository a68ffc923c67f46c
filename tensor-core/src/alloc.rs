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
//! How: a block of [`MIN_CACHED`] bytes or more is rounded up, with a prefix of [`ALIGN`] bytes
//! that records its class, to its size class (32 classes per power of two, so at most 3.2% is
//! wasted) and, when freed, kept on its class's free list instead of going back to the system.
//! A request takes the smallest cached block of its class or of the next [`REACH`] classes (a
//! block up to twice its size), zeroing it first if it asks for zeroed memory. Smaller blocks,
//! and the rare ones that need an alignment above [`ALIGN`], go straight to the system
//! allocator. A step repeats the same shapes, so after the first step every large request is
//! served from the lists.
//!
//! The cache holds at most a quarter more than the process's largest live set (plus the block
//! being allocated): when a request the lists cannot serve would push the blocks held past that,
//! the least recently freed blocks go back to the system first (`release_oldest`). Both rules
//! were tuned on the measure that counts, a warm step (`trainer bench`, AMD EPYC, 2026-12-02):
//! with exact classes and no slack above the live set, `small` at batch 250 took 84 of a step's
//! 172 large blocks from the system (7,700 page faults); taking larger blocks with no slack, 51
//! (70,000 page faults on fresh pages); a block up to twice the request and a quarter of slack,
//! 0.4 (244 page faults), at the same speed, holding 579 MiB for a live set of 482.
//!
//! The blocks are anonymous mappings of their own (`mmap` on Unix; the system allocator
//! elsewhere), returned to the kernel whole when released, so that the resident set is what the
//! cache holds. Blocks taken from the C heap instead (as they were before) shared it with the
//! small blocks, and glibc kept them there after they were freed, in a layout that drifted from
//! epoch to epoch: `trainer bench` measured a peak resident set of 671 MiB for `small` at batch
//! 250 with them (now 604) and 74 MiB for `tiny` at batch 100 (now 64), and a 20-epoch `tiny`
//! run's peak rose by up to 6.7% after epoch 2 (now under 1%).
//! [`stats`] counts the blocks taken from the system and the ones reused, and `trainer bench`
//! prints them per warm step.
//!
//! The free lists are intrusive (a freed block stores the pointer to the next one, and when it
//! was freed, in its first bytes), so the allocator never allocates for itself, and one mutex
//! guards them: large requests are a few hundred per step, so it is never contended. [`trim`]
//! returns every cached block to the system (`train` does after each epoch, before it reads the
//! resident set).
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

/// How many classes above its own a request may take a cached block from: a power of two's
/// worth, so a block up to twice the request (see the module docs for why).
pub const REACH: usize = SUBCLASSES;
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

/// Whether the cache handles `layout`, and if so the class of the block it needs (the request
/// after a prefix of ALIGN bytes).
fn cached_class(layout: Layout) -> Option<usize> {
    if layout.size() < MIN_CACHED || layout.align() > ALIGN {
        return None;
    }
    Some(class_of(layout.size().checked_add(ALIGN)?)?.0)
}

/// The layout of a block of `class` as the system allocator gets it.
fn class_layout(class: usize) -> Layout {
    Layout::from_size_align(class_size(class), ALIGN).expect("class sizes are valid layouts")
}

fn lock() -> std::sync::MutexGuard<'static, FreeLists> {
    // A panic while the lock is held cannot leave the lists half-updated (each update is one
    // pointer write and one counter write), so a poisoned lock is still usable.
    LISTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the smallest cached block of `class` or up to [`REACH`] classes above it, if any: the
/// block and its class.
fn pop(class: usize) -> Option<(*mut u8, usize)> {
    let mut lists = lock();
    let last = (class + REACH).min(CLASSES - 1);
    let found = (class..=last).find(|&c| !lists.heads[c].is_null())?;
    let head = lists.heads[found];
    // SAFETY: every listed block is at least MIN_CACHED bytes, ALIGN-aligned, and starts with
    // the header written by `push`.
    lists.heads[found] = unsafe { (*head.cast::<Header>()).next };
    lists.cached_bytes -= class_size(found) as u64;
    Some((head, found))
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

/// Called when a request the lists cannot serve is about to take a new block from the system:
/// if the blocks held (live, counting the new one, plus cached) would then exceed the largest
/// live set so far by more than a quarter, returns the least recently freed cached blocks to the
/// system until they no longer do (or the lists are empty). So the cache never makes the process
/// hold more than 1.25 times its largest live set plus one block, and it keeps every block while
/// it holds less. (Without a bound, the seed at batch 64 held 2,045 MiB for 1,682 MiB live; with
/// no slack above the live set, blocks of the classes a step needs late were released to make
/// room and taken again from the system in every step: module docs.) The blocks freed longest
/// ago are the ones least likely to be asked for soon.
fn release_oldest() {
    let mut lists = lock();
    let held = LIVE.load(Ordering::Relaxed) + lists.cached_bytes;
    let peak = PEAK_LIVE.load(Ordering::Relaxed);
    let excess = held.saturating_sub(peak + peak / 4);
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
            pages::unmap(node, class_layout(class));
            released += size as u64;
        }
    }
    lists.cached_bytes -= released;
}

impl CachingAlloc {
    fn take(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let Some(class) = cached_class(layout) else {
            // SAFETY: forwarded unchanged.
            return unsafe {
                if zeroed {
                    System.alloc_zeroed(layout)
                } else {
                    System.alloc(layout)
                }
            };
        };
        let (block, class, reused) = match pop(class) {
            Some((block, found)) => {
                REUSED.fetch_add(1, Ordering::Relaxed);
                add_live(class_size(found));
                (block, found, true)
            }
            None => {
                add_live(class_size(class));
                release_oldest();
                SYSTEM_ALLOCS.fetch_add(1, Ordering::Relaxed);
                let layout = class_layout(class);
                // SAFETY: the layout has a non-zero size.
                let block = unsafe { pages::map(layout) };
                if block.is_null() {
                    LIVE.fetch_sub(class_size(class) as u64, Ordering::Relaxed);
                    return block;
                }
                (block, class, false)
            }
        };
        // SAFETY: the block has class_size(class) >= ALIGN + layout.size() bytes; its prefix
        // records the class, the caller gets what follows.
        unsafe {
            block.cast::<usize>().write(class);
            let p = block.add(ALIGN);
            if zeroed && reused {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }
}

/// The class recorded in the prefix of the block that `p` (a pointer [`CachingAlloc`] handed
/// out for a cached layout) starts after.
///
/// # Safety
/// `p` must be such a pointer, not yet freed.
unsafe fn class_of_block(p: *mut u8) -> (*mut u8, usize) {
    let block = p.sub(ALIGN);
    (block, block.cast::<usize>().read())
}

// SAFETY: every pointer handed out is either the system allocator's for the caller's layout, or
// ALIGN bytes into a block of at least the caller's size class (ALIGN-aligned) that no one else
// holds, whose prefix records its class; a block goes back to the system with its class's layout.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.take(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.take(layout, true)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if cached_class(layout).is_some() {
            let (block, class) = class_of_block(p);
            let size = class_size(class);
            LIVE.fetch_sub(size as u64, Ordering::Relaxed);
            push(class, size, block)
        } else {
            System.dealloc(p, layout)
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (cached_class(layout), cached_class(new_layout)) {
            (None, None) => System.realloc(p, layout, new_size),
            // The block already has room.
            (Some(_), Some(b)) if b <= class_of_block(p).1 => p,
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

/// Where the cache's blocks come from and go back to: on Unix, anonymous mappings of their own
/// (zeroed pages, returned to the kernel whole when unmapped), so that they never share the C
/// heap with small blocks; elsewhere the system allocator.
mod pages {
    use std::alloc::Layout;

    /// A new zeroed block of `layout` (page-aligned on Unix), or null.
    ///
    /// # Safety
    /// `layout` has a non-zero size.
    #[cfg(unix)]
    pub unsafe fn map(layout: Layout) -> *mut u8 {
        let p = libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    /// Returns a block from [`map`] with its layout.
    ///
    /// # Safety
    /// `p` came from [`map`] with `layout` and is not used afterwards.
    #[cfg(unix)]
    pub unsafe fn unmap(p: *mut u8, layout: Layout) {
        libc::munmap(p.cast(), layout.size());
    }

    #[cfg(not(unix))]
    pub unsafe fn map(layout: Layout) -> *mut u8 {
        std::alloc::GlobalAlloc::alloc_zeroed(&std::alloc::System, layout)
    }

    #[cfg(not(unix))]
    pub unsafe fn unmap(p: *mut u8, layout: Layout) {
        std::alloc::GlobalAlloc::dealloc(&std::alloc::System, p, layout)
    }
}

/// The bytes a request of `size` bytes (aligned to at most [`ALIGN`]) holds: its block, prefix
/// and rounding included, for a request the cache handles; `size` itself for a smaller one.
pub fn block_size(size: usize) -> usize {
    match Layout::from_size_align(size, 1).ok().and_then(cached_class) {
        Some(class) => class_size(class),
        None => size,
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

/// Returns every cached block to the system; returns the bytes released.
pub fn trim() -> u64 {
    let mut lists = lock();
    let mut released = 0;
    for (class, head) in lists.heads.iter_mut().enumerate() {
        let (size, layout) = (class_size(class), class_layout(class));
        while !head.is_null() {
            let block = *head;
            // SAFETY: listed blocks start with the header `push` wrote and were mapped with
            // exactly this layout.
            unsafe {
                *head = (*block.cast::<Header>()).next;
                pages::unmap(block, layout);
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
        assert!(cached_class(Layout::from_size_align(MIN_CACHED - 1, 4).unwrap()).is_none());
        assert!(cached_class(Layout::from_size_align(MIN_CACHED, 128).unwrap()).is_none());
        // The prefix moves a request of exactly MIN_CACHED to the next class.
        assert_eq!(
            cached_class(Layout::from_size_align(MIN_CACHED, 64).unwrap()),
            Some(1)
        );
    }

    /// The cache itself, called directly (it is not the global allocator in these tests, and
    /// this is the only test that uses it, so its lists and counters are this test's alone).
    #[test]
    fn freed_blocks_serve_requests_up_to_twice_smaller_zeroed_when_asked() {
        let cache = CachingAlloc;
        let layout = |size| Layout::from_size_align(size, 8).unwrap();
        let big = 3 << 20;
        let before = stats();
        unsafe {
            let p = cache.alloc(layout(big));
            assert!(!p.is_null() && (p as usize).is_multiple_of(ALIGN));
            ptr::write_bytes(p, 0xAB, big);
            cache.dealloc(p, layout(big));
            assert_eq!(
                stats().cached_bytes,
                before.cached_bytes + 3 * (1 << 20) + (1 << 16)
            );

            // Somewhat smaller (within REACH classes): the same block, zeroed on request.
            let q = cache.alloc_zeroed(layout(2 << 20));
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 2 << 20)
                .iter()
                .all(|&b| b == 0));
            // Growing within the block keeps it; past it, a move that keeps the contents.
            ptr::write_bytes(q, 7, 2 << 20);
            let r = cache.realloc(q, layout(2 << 20), big);
            assert_eq!(r, q);
            let s = cache.realloc(r, layout(big), 2 * big);
            assert_ne!(s, r);
            assert!(std::slice::from_raw_parts(s, 2 << 20)
                .iter()
                .all(|&b| b == 7));
            cache.dealloc(s, layout(2 * big));

            // More than twice smaller: a block of its own class, not the cached 3 MiB one.
            let t = cache.alloc(layout(1 << 20));
            assert_ne!(t, p);
            cache.dealloc(t, layout(1 << 20));
        }
        let after = stats();
        assert_eq!(after.live_bytes, before.live_bytes);
        assert_eq!(after.reused, before.reused + 1);
        assert_eq!(after.system_allocs, before.system_allocs + 3);
        assert!(trim() >= 3 << 20);
        assert_eq!(stats().cached_bytes, 0);
    }
}
