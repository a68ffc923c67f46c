//! Tests of the harness itself: the emulator's barrier, shared memory and warp shuffles must
//! behave as on a GPU (the harness catching a wrong kernel is `relu/cuda_tests.rs`'s
//! `emu_harness_reports_a_kernel_reading_the_wrong_index`).

mod tensor_cores;

use super::launch::LaunchConfig;
use super::parity::{
    assert_close, compare, run_harness as run, uniform, EXACT, REVERSE_IN_BLOCK,
    REVERSE_IN_BLOCK_NO_BARRIER, WARP_SUMS,
};

#[test]
fn emu_barrier_is_real_and_a_missing_one_is_caught() {
    let (threads, blocks) = (256u32, 8u32);
    let n = (threads * blocks) as usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let want: Vec<f32> = x
        .chunks(threads as usize)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    let cfg = LaunchConfig::linear(blocks, threads, threads * 4);
    assert_close(
        "reverse with barrier",
        &run(REVERSE_IN_BLOCK, &x, n, cfg),
        &want,
        EXACT,
    );
    // Without it, threads read slots their partners have not written yet: still the NaN poison
    // the emulator fills shared memory with, or nothing sensible.
    let racy = run(REVERSE_IN_BLOCK_NO_BARRIER, &x, n, cfg);
    assert!(
        compare(&racy, &want, EXACT).is_err(),
        "the missing barrier went unnoticed"
    );
}

#[test]
fn emu_warp_shuffles_sum_each_warp() {
    let n = 256 + 64;
    let x = uniform(2, n, -1.0, 1.0);
    let got = run(WARP_SUMS, &x, n / 32, LaunchConfig::linear(5, 64, 0));
    // The shuffle tree's order: offsets 16, 8, 4, 2, 1 (lane i adds lane i + offset).
    let want: Vec<f32> = x
        .chunks(32)
        .map(|w| {
            let mut v = w.to_vec();
            for off in [16, 8, 4, 2, 1] {
                v = (0..32)
                    .map(|i| {
                        if i + off < 32 {
                            v[i] + v[i + off]
                        } else {
                            v[i] + v[i]
                        }
                    })
                    .collect();
            }
            v[0]
        })
        .collect();
    assert_close("warp sums", &got, &want, EXACT);
}
