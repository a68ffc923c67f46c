//! The caching allocator as the global allocator of this test binary: every allocation of the
//! test harness goes through it too. Each test uses its own size class (3, 5, 9, 17 MiB), and the
//! tests run one at a time (`trim` empties every class).

use std::sync::{Mutex, MutexGuard};

use tensor_core::alloc::{self, CachingAlloc};

#[global_allocator]
static ALLOCATOR: CachingAlloc = CachingAlloc;

const MIB: usize = 1 << 20;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_freed_block_serves_the_next_request_of_its_class_without_the_system() {
    let _serial = serial();
    let n = 3 * MIB / 4;
    let first = vec![1.0f32; n];
    let p = first.as_ptr();
    drop(first);
    let before = alloc::stats();
    // A slightly smaller request falls in the same class and gets the same block.
    let second = vec![2.0f32; n - 100];
    assert_eq!(second.as_ptr(), p);
    let after = alloc::stats();
    assert_eq!(after.system_allocs, before.system_allocs);
    assert!(after.reused > before.reused);
}

#[test]
fn zeroed_requests_get_zeros_from_a_reused_block() {
    let _serial = serial();
    let n = 5 * MIB / 4;
    let mut first = vec![0.0f32; n];
    first.fill(7.5);
    let p = first.as_ptr();
    drop(first);
    let second = vec![0.0f32; n];
    assert_eq!(second.as_ptr(), p, "the block was reused");
    assert!(second.iter().all(|&v| v == 0.0));
}

#[test]
fn growing_a_vector_keeps_its_contents_across_classes() {
    let _serial = serial();
    let mut v: Vec<u32> = Vec::new();
    for i in 0..(9 * MIB / 4) as u32 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<u32>>());
}

#[test]
fn trim_returns_cached_blocks_to_the_system() {
    let _serial = serial();
    let block = vec![3u8; 17 * MIB];
    drop(block);
    assert!(alloc::stats().cached_bytes >= (17 * MIB) as u64);
    let released = alloc::trim();
    assert!(released >= (17 * MIB) as u64, "released {released}");
    // The next request of that class comes from the system again.
    let before = alloc::stats().system_allocs;
    let again = vec![4u8; 17 * MIB];
    assert!(alloc::stats().system_allocs > before);
    assert_eq!(again[17 * MIB - 1], 4);
}

#[test]
fn a_miss_returns_the_oldest_cached_blocks_when_more_than_the_largest_live_set_would_be_held() {
    let _serial = serial();
    alloc::trim();
    alloc::reset_peak();
    // Four 2 MiB blocks live (the largest live set), then cached, the first freed first.
    let blocks: Vec<Vec<u8>> = (0..4).map(|_| vec![1u8; 2 * MIB]).collect();
    let kept: Vec<*const u8> = blocks[2..].iter().map(|b| b.as_ptr()).collect();
    drop(blocks);
    let two = alloc::block_size(2 * MIB) as u64;
    let held = |s: alloc::Stats| s.live_bytes + s.cached_bytes;
    let before = alloc::stats();
    assert_eq!(before.cached_bytes, 4 * two);
    // A 5 MiB request misses (the cached blocks are smaller); 5 MiB live and 8 MiB cached would
    // exceed 1.25 times the 8 MiB live before, so the two oldest 2 MiB blocks go back first.
    let big = vec![2u8; 5 * MIB];
    let after = alloc::stats();
    assert_eq!(after.system_allocs, before.system_allocs + 1);
    assert!(
        held(after) <= held(before) * 5 / 4,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.cached_bytes, 2 * two, "the newest two blocks stay");
    // The ones left are the last freed.
    let again = vec![3u8; 2 * MIB];
    assert!(kept.contains(&again.as_ptr()));
    drop((big, again));
}

#[test]
fn a_miss_keeps_the_cache_while_less_than_the_largest_live_set_is_held() {
    let _serial = serial();
    alloc::trim();
    alloc::reset_peak();
    // 12 MiB live at most, then given back to the system.
    drop(vec![1u8; 12 * MIB]);
    alloc::trim();
    // An 8 MiB block cached, then 3 MiB asked for: the block is more than twice the request, so
    // it does not serve it, and 3 + 8 <= 1.25 x 12, so it stays.
    drop(vec![1u8; 8 * MIB]);
    let cached = alloc::stats().cached_bytes;
    assert!(cached >= (8 * MIB) as u64);
    let three = vec![1u8; 3 * MIB];
    assert_eq!(alloc::stats().cached_bytes, cached, "nothing released");
    drop(three);
}
