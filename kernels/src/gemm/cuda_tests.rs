//! SGEMM: the CPU `sgemm` against the emulated tiled kernel in both block tiles (which must
//! agree bit for bit), every transpose pair, shapes that are not multiples of the 128 x 128 x 8
//! and 64 x 64 x 8 tiles, and a convolution-sized product; and the choice of tile by shape.

use super::cuda::{self, DevOperand, GemmTile};
use super::{sgemm, Operand, Trans};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, Tol, EXACT};

/// The tolerance of a product with inner dimension `k` and operands in [-1, 1]: both sides add
/// the same k products in f32 but in different orders (the CPU in cache blocks, the kernel in
/// increasing k with a * b + c possibly contracted on a GPU), so each rounds differently; the
/// rounding errors of a sum of k terms of size <= 1 grow like sqrt(k) ulps of the partial sums
/// (around sqrt(k) in size), bounded here by k * 2^-24 with a margin of 4.
fn gemm_tol(k: usize) -> Tol {
    Tol {
        atol: 4.0 * (k.max(1) as f32) * f32::EPSILON / 2.0,
        rtol: 1e-6,
    }
}

on_emu_and_gpu!(
    emu_sgemm_matches_cpu,
    gpu_sgemm_matches_cpu,
    sgemm_matches_cpu
);

/// The large tile where its blocks fill an H100 (132 multiprocessors) once, else the small one.
#[test]
fn emu_gemm_tile_choice() {
    // The conv passes of block 1 and block 3 at batch 250 (the forward GEMMs) and block 1's
    // backward-weight (9 output tiles, its pixel sum split up to 64 ways).
    assert_eq!(GemmTile::for_output(128, 256_000, 1), GemmTile::Large);
    assert_eq!(GemmTile::for_output(512, 16_000, 1), GemmTile::Large);
    assert_eq!(GemmTile::for_output(128, 1152, 64), GemmTile::Large);
    // fc1 at batch 250 (2 x 32 large tiles), sgemm 1024^3 (64), a small conv test shape.
    assert_eq!(GemmTile::for_output(250, 4096, 1), GemmTile::Small);
    assert_eq!(GemmTile::for_output(1024, 1024, 1), GemmTile::Small);
    assert_eq!(GemmTile::for_output(128, 128, 1), GemmTile::Small);
    // The boundary: 132 blocks of 128 x 128 is a wave, 131 is not.
    assert_eq!(GemmTile::for_output(128, 132 * 128, 1), GemmTile::Large);
    assert_eq!(GemmTile::for_output(128, 131 * 128, 1), GemmTile::Small);
}

fn sgemm_matches_cpu<B: Backend>(dev: &B) {
    // (m, k, n): one element; a single partial tile; every axis just past a tile multiple
    // (twice: the small tile's, then the large one's in m and n with k not a multiple of 8);
    // the forward GEMM of a 3x3 convolution, 128 -> 128 channels, 2 images of 8 x 8.
    let shapes = [
        (1usize, 1usize, 1usize),
        (5, 3, 7),
        (65, 17, 129),
        (130, 33, 67),
        (131, 45, 257),
        (128, 1152, 128),
    ];
    let transposes = [
        (Trans::No, Trans::No),
        (Trans::Yes, Trans::No),
        (Trans::No, Trans::Yes),
        (Trans::Yes, Trans::Yes),
    ];
    for (s, &(m, k, n)) in shapes.iter().enumerate() {
        // The big product only as stored (the transposes are covered by the small ones).
        let pairs = if m * k * n > 1 << 20 {
            &transposes[..1]
        } else {
            &transposes[..]
        };
        for (t, &(ta, tb)) in pairs.iter().enumerate() {
            let seed = 300 + 10 * s as u64 + t as u64;
            let a = uniform(seed, m * k, -1.0, 1.0);
            let b = uniform(seed + 1, k * n, -1.0, 1.0);
            let c0 = uniform(seed + 2, m * n, -1.0, 1.0);
            // Stored shapes: op(a) = a^T means a is stored (k, m).
            let (ar, ac) = if ta == Trans::Yes { (k, m) } else { (m, k) };
            let (br, bc) = if tb == Trans::Yes { (n, k) } else { (k, n) };
            let (ab, bb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
            for (alpha, beta) in [(1.0f32, 0.0f32), (-1.5, 0.5)] {
                let mut c = c0.clone();
                let op = |data, rows, cols, trans| Operand {
                    data,
                    rows,
                    cols,
                    trans,
                };
                sgemm(alpha, op(&a, ar, ac, ta), op(&b, br, bc, tb), beta, &mut c).unwrap();
                // beta == 0: c starts poisoned, and every value must be written.
                let start = if beta == 0.0 {
                    vec![f32::NAN; m * n]
                } else {
                    c0.clone()
                };
                let what = format!("sgemm ({m}, {k}, {n}) {ta:?} {tb:?} alpha {alpha} beta {beta}");
                let dev_a = || DevOperand {
                    data: &ab,
                    rows: ar,
                    cols: ac,
                    trans: ta,
                };
                let dev_b = || DevOperand {
                    data: &bb,
                    rows: br,
                    cols: bc,
                    trans: tb,
                };
                let mut cb = dev.upload(&start).unwrap();
                cuda::sgemm(dev, alpha, dev_a(), dev_b(), beta, &mut cb).unwrap();
                assert_close(&what, &dev.download(&cb).unwrap(), &c, gemm_tol(k));
                let mut per_tile = Vec::new();
                for tile in GemmTile::ALL {
                    let mut cb = dev.upload(&start).unwrap();
                    cuda::sgemm_tiled(dev, tile, alpha, dev_a(), dev_b(), beta, &mut cb).unwrap();
                    let cg = dev.download(&cb).unwrap();
                    assert_close(&format!("{what}, {tile:?}"), &cg, &c, gemm_tol(k));
                    per_tile.push(cg);
                }
                let what = format!("{what}: large vs small tile");
                assert_close(&what, &per_tile[0], &per_tile[1], EXACT);
            }
        }
    }
    let (a, mut c) = (dev.alloc(6).unwrap(), dev.alloc(5).unwrap());
    let operand = |rows, cols, trans| DevOperand {
        data: &a,
        rows,
        cols,
        trans,
    };
    let e = cuda::sgemm(
        dev,
        1.0,
        operand(2, 3, Trans::No),
        operand(2, 3, Trans::No),
        0.0,
        &mut c,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda sgemm: op(a) is (2, 3) but op(b) is (2, 3)"
    );
    let e = cuda::sgemm(
        dev,
        1.0,
        operand(2, 3, Trans::No),
        operand(2, 3, Trans::Yes),
        0.0,
        &mut c,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda sgemm: c holds 5 values, expected 4"
    );
}
