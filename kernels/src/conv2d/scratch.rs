//! Scratch memory reused across calls: the transformed tiles of a Winograd pass are tens of
//! megabytes, and allocating them afresh each call costs a page fault per 4 KiB page, every step.
//!
//! Each thread keeps one buffer, grown to the largest length asked for and never shrunk. A call
//! takes the buffer out of its slot and puts it back when done, so a nested call on the same thread
//! (a rayon worker that picks up another convolution while it waits) finds the slot empty and gets
//! a fresh buffer instead of sharing. The contents are scratch: every user overwrites what it reads.

use std::cell::Cell;

thread_local! {
    static SLOT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch buffer (values left over from earlier calls).
pub(super) fn with<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SLOT.with(Cell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SLOT.with(|slot| {
        let other = slot.take();
        slot.set(if other.len() > buf.len() { other } else { buf });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_buffer_and_nests() {
        let first = with(1000, |b| {
            b.fill(1.0);
            b.as_ptr() as usize
        });
        // The same memory again, still holding what the last user left.
        let again = with(10, |b| {
            assert!(b.iter().all(|&v| v == 1.0));
            b.as_ptr() as usize
        });
        assert_eq!(first, again);
        with(10, |outer| {
            with(10, |inner| {
                assert_ne!(
                    outer.as_ptr(),
                    inner.as_ptr(),
                    "nested calls must not share"
                );
            });
        });
    }
}
