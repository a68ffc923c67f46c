//! The sliding kernels with BF16 operands and FP32 accumulation, on CPUs with AVX-512 BF16
//! (`vdpbf16ps`: each 32-bit lane multiplies a pair of BF16 values by another pair and adds both
//! products to its FP32 sum, twice the products of an FP32 FMA per instruction; on the Zen 4
//! EPYC one thread's loop reaches 228 GFLOP/s with it against 115 with `vfmadd231ps` zmm).
//!
//! The geometry is the FP32 kernels' (`mod.rs`): vectors along the pixels of a plane, each tap a
//! masked load at a fixed offset. What changes is where the pairs come from:
//! - forward and backward-data sum over the depth (input channels; output channels for
//!   backward-data), so the pairs are two channels of one pixel: the input is copied to
//!   (N, ceil(depth / 2), H W) 32-bit lanes, channel 2e in the low half and 2e + 1 in the high
//!   half (a zero channel past an odd depth), and the weight packed in the same pairs; a vector
//!   holds 16 pixels of a channel pair and the tile broadcasts one pair of weights per row.
//! - backward-weight sums over the pixels, so the pairs are two neighbouring pixels: dy and x are
//!   copied to rows of BF16 values (one row per channel, the batch's planes one after the other),
//!   32 pixels to a vector; lane l pairs positions 2l and 2l + 1, whatever they are, since every
//!   position's product goes into the same sum. Planes smaller than 32 pixels that divide 32
//!   (4x4, 2x2, 1x1 maps) share a vector: 32 / (H W) images side by side, masked per image.
//!
//! Every operand is rounded to BF16 when it is copied, to nearest with ties to even: the weight
//! by [`Bf16::from_f32`], the input, dy and x by `vcvtne2ps2bf16` ([`pair_plane`], [`to_bf16`]),
//! which rounds the same way but takes FP32 subnormals as zero. Products of two BF16 values are
//! exact in FP32, and the sums are FP32. `vdpbf16ps` treats BF16 subnormals as zero and flushes a
//! subnormal sum to zero (Intel's definition), a range (under 1.2e-38) no value of a training
//! step comes near.
//!
//! Determinism as the FP32 kernels: forward and backward-data compute each output in one tile in
//! a fixed order; backward-weight cuts the batch into image ranges fixed by the shapes and adds
//! the ranges' sums in range order. No result depends on the number of threads.

use rayon::prelude::*;

use super::{Orientation, Taps};
use crate::conv2d::{scratch, Conv2dDims};
use crate::precision::Bf16;

/// Whether this CPU and process run the BF16 kernels: AVX-512 chosen ([`crate::simd::isa`], so
/// `KERNELS_ISA=avx2` turns them off too) and the CPU has AVX-512 BF16.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::isa() == crate::simd::Isa::Avx512
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Forward register tile: MR rows (output channels) by NR vectors of 16 pixels, as the FP32
/// AVX-512 tile.
const MR: usize = 8;
const NR: usize = 3;
/// Backward-weight register tile: MR2 dy rows by NC2 x rows, each a vector of 16 partial sums.
const MR2: usize = 3;
const NC2: usize = 8;
/// Pixels per vector: 16 pairs in the forward's 32-bit lanes, 32 BF16 values in
/// backward-weight's.
const PAIR_LANES: usize = 16;
const BF16_LANES: usize = 32;

/// The bits of `x` rounded to BF16 (the weights, packed once per call).
fn bits(x: f32) -> u32 {
    u32::from(Bf16::from_f32(x).0)
}

/// `len` 32-bit lanes of scratch memory (the f32 buffer reinterpreted).
fn lanes32(buf: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is valid for
    // both; the slice borrows `buf` mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u32>(), buf.len()) }
}

/// `2 len` 16-bit values of scratch memory.
fn lanes16(buf: &mut [f32]) -> &mut [u16] {
    // SAFETY: as `lanes32`; u16's alignment divides f32's.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u16>(), 2 * buf.len()) }
}

/// input: (N, depth, H W) -> pairs: (N, ceil(depth / 2), H W), lane = BF16(channel 2e) |
/// BF16(channel 2e + 1) << 16, the high half 0 past an odd depth. Images in parallel.
fn pair_channels(pairs: &mut [u32], input: &[f32], depth: usize, hw: usize) {
    let depth2 = depth.div_ceil(2);
    pairs
        .par_chunks_mut(depth2 * hw)
        .zip(input.par_chunks(depth * hw))
        .for_each(|(dst, src)| {
            for (e2, out) in dst.chunks_exact_mut(hw).enumerate() {
                let lo = &src[2 * e2 * hw..][..hw];
                let hi = (2 * e2 + 1 < depth).then(|| &src[(2 * e2 + 1) * hw..][..hw]);
                // SAFETY: `available` (asserted by every caller) says the CPU has AVX-512 F, BW
                // and BF16; the slices are one plane each.
                unsafe { pair_plane(out, lo, hi) }
            }
        });
}

/// One plane of [`pair_channels`]: out[p] = BF16(lo[p]) | BF16(hi[p]) << 16 (0 without `hi`),
/// 16 pixels at a time: `vcvtne2ps2bf16` rounds 32 values (to nearest, ties to even, as
/// [`Bf16::from_f32`], but subnormal inputs flushed to zero: `vdpbf16ps` would take them as zero
/// anyway) and a word permutation interleaves them.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16; `lo` and `hi` at least as long as `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_plane(out: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    use std::arch::x86_64::*;
    // Word 2p from lo's pixel p (word p of the conversion), word 2p + 1 from hi's (word 16 + p).
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut p = 0;
        while p < 16 {
            idx[2 * p] = p as u16;
            idx[2 * p + 1] = 16 + p as u16;
            p += 1;
        }
        idx
    };
    let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
    for p in (0..out.len()).step_by(PAIR_LANES) {
        let n = PAIR_LANES.min(out.len() - p);
        let m = (u32::MAX >> (32 - n)) as __mmask16;
        let a = _mm512_maskz_loadu_ps(m, lo.as_ptr().add(p));
        let b = hi.map_or(_mm512_setzero_ps(), |hi| {
            _mm512_maskz_loadu_ps(m, hi.as_ptr().add(p))
        });
        // Words 0..16: a's values, 16..32: b's.
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
        let v = _mm512_permutexvar_epi16(idx, v);
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(p).cast(), m, v);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pair_plane(_: &mut [u32], _: &[f32], _: Option<&[f32]>) {
    unreachable!("the BF16 kernels run only where `available` says so")
}

/// dst[i] = BF16(src[i]), 32 values at a time, rounded as [`pair_plane`] rounds.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16; `src` at least as long as `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn to_bf16(dst: &mut [u16], src: &[f32]) {
    use std::arch::x86_64::*;
    for p in (0..dst.len()).step_by(BF16_LANES) {
        let n = BF16_LANES.min(dst.len() - p);
        let m = (u64::MAX >> (64 - n)) as __mmask32;
        let a = _mm512_maskz_loadu_ps(m as __mmask16, src.as_ptr().add(p));
        let b = _mm512_maskz_loadu_ps((m >> 16) as __mmask16, src.as_ptr().wrapping_add(p + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
        _mm512_mask_storeu_epi16(dst.as_mut_ptr().add(p).cast(), m, v);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn to_bf16(_: &mut [u16], _: &[f32]) {
    unreachable!("the BF16 kernels run only where `available` says so")
}

/// Packs the weight as the FP32 `pack` does, in channel pairs: block b holds
/// [depth2][tap][MR] lanes, each the pair (e = 2 e2, 2 e2 + 1) of row b MR + m. Returns
/// (rows, depth).
fn pack_pairs(
    packed: &mut [u32],
    weight: &[f32],
    d: &Conv2dDims,
    taps: usize,
    orient: Orientation,
) -> (usize, usize) {
    let (rows, depth) = match orient {
        Orientation::Forward => (d.k, d.c),
        Orientation::Adjoint => (d.c, d.k),
    };
    let depth2 = depth.div_ceil(2);
    // The weight of (row, e) at tap t, 0 past the depth.
    let w = |row: usize, e: usize, t: usize| -> u32 {
        if e >= depth {
            return 0;
        }
        bits(match orient {
            Orientation::Forward => weight[(row * d.c + e) * taps + t],
            Orientation::Adjoint => weight[(e * d.c + row) * taps + taps - 1 - t],
        })
    };
    packed
        .par_chunks_exact_mut(taps * depth2 * MR)
        .enumerate()
        .for_each(|(b, block)| {
            block.fill(0);
            for m in 0..MR.min(rows - b * MR) {
                let row = b * MR + m;
                for e2 in 0..depth2 {
                    for t in 0..taps {
                        block[(e2 * taps + t) * MR + m] =
                            w(row, 2 * e2, t) | w(row, 2 * e2 + 1, t) << 16;
                    }
                }
            }
        });
    (rows, depth)
}

/// One forward task: a group of images.
struct Group<'a> {
    /// (G, rows, H W), overwritten.
    out: &'a mut [f32],
    /// (G, depth2, H W) channel pairs.
    input: &'a [u32],
    /// [block][depth2][tap][MR] from [`pack_pairs`].
    packed: &'a [u32],
    rows: usize,
    depth2: usize,
    taps: &'a Taps,
}

/// The forward kernel on one group: [`super::forward_group`]'s loops with a pair of channels per
/// lane and `vdpbf16ps` for the FMA.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16; `g`'s slices must hold what their docs say.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::needless_range_loop)]
unsafe fn forward_group(g: &mut Group<'_>) {
    use std::arch::x86_64::*;
    let Taps {
        hw, vectors, count, ..
    } = *g.taps;
    let (rows, depth2) = (g.rows, g.depth2);
    let images = g.input.len() / (depth2 * hw);
    let columns = images * vectors;
    let (input, out) = (g.input.as_ptr(), g.out.as_mut_ptr());
    for block in 0..rows.div_ceil(MR) {
        let w_block = g.packed.as_ptr().add(block * count * depth2 * MR);
        let live_rows = MR.min(rows - block * MR);
        for first in (0..columns).step_by(NR) {
            let mut src = [input; NR];
            let mut dst = [out; NR];
            let mut vec = [usize::MAX; NR];
            let mut masks = [g.taps.masks.as_ptr().add(vectors * count); NR];
            for i in 0..NR {
                let col = first + i;
                if col < columns {
                    let (j, v) = (col / vectors, col % vectors);
                    src[i] = input.add(j * depth2 * hw + v * PAIR_LANES);
                    dst[i] = out.add((j * rows + block * MR) * hw + v * PAIR_LANES);
                    vec[i] = v;
                    masks[i] = g.taps.masks.as_ptr().add(v * count);
                }
            }
            let mut acc = [[_mm512_setzero_ps(); NR]; MR];
            let mut w = w_block;
            for e2 in 0..depth2 {
                for t in 0..count {
                    let off = *g.taps.offsets.get_unchecked(t);
                    let mut b = [_mm512_setzero_si512(); NR];
                    for i in 0..NR {
                        let at = src[i].wrapping_add(e2 * hw).wrapping_offset(off);
                        b[i] = _mm512_maskz_loadu_epi32(*masks[i].add(t) as __mmask16, at.cast());
                    }
                    for r in 0..MR {
                        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*w.add(r) as i32));
                        for i in 0..NR {
                            let bi: __m512bh = std::mem::transmute(b[i]);
                            acc[r][i] = _mm512_dpbf16_ps(acc[r][i], a, bi);
                        }
                    }
                    w = w.add(MR);
                }
            }
            for i in 0..NR {
                if vec[i] == usize::MAX {
                    continue;
                }
                let tail = g.taps.tails[vec[i]] as __mmask16;
                for r in 0..MR {
                    if r < live_rows {
                        _mm512_mask_storeu_ps(dst[i].add(r * hw), tail, acc[r][i]);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_group(_: &mut Group<'_>) {
    unreachable!("the BF16 kernels run only where `available` says so")
}

/// Bytes of one forward task's input group kept in a core's L2 cache (as the FP32 kernel).
const GROUP_BYTES: usize = 512 * 1024;

/// The BF16 forward core of forward and backward-data: input (N, depth, H W) -> out (N, rows,
/// H W), overwritten.
fn forward_core(out: &mut [f32], input: &[f32], weight: &[f32], d: &Conv2dDims, o: Orientation) {
    assert!(available(), "the BF16 sliding kernels need AVX-512 BF16");
    let taps = Taps::new(d, PAIR_LANES);
    let (rows, depth) = match o {
        Orientation::Forward => (d.k, d.c),
        Orientation::Adjoint => (d.c, d.k),
    };
    let depth2 = depth.div_ceil(2);
    let hw = taps.hw;
    let packed_len = rows.div_ceil(MR) * MR * taps.count * depth2;
    let image_in = depth2 * hw;
    let fit = (GROUP_BYTES / (4 * image_in)).max(1);
    let spread = d.n.div_ceil(4 * rayon::current_num_threads());
    let group = fit.min(spread).max(1);
    scratch::with(packed_len + d.n * image_in, |buf| {
        let buf = lanes32(buf);
        let (packed, pairs) = buf.split_at_mut(packed_len);
        let (rows, _) = pack_pairs(packed, weight, d, taps.count, o);
        pair_channels(pairs, input, depth, hw);
        let (packed, pairs) = (&*packed, &*pairs);
        out.par_chunks_mut(group * rows * hw)
            .zip(pairs.par_chunks(group * image_in))
            .for_each(|(out, input)| {
                let mut g = Group {
                    out,
                    input,
                    packed,
                    rows,
                    depth2,
                    taps: &taps,
                };
                // SAFETY: `available` (asserted above) says the CPU has AVX-512 F, BW and BF16;
                // the slices were sized above.
                unsafe { forward_group(&mut g) }
            });
    });
}

/// x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, H, W), overwritten, with BF16 operands;
/// `d` must satisfy [`super::applies`] and [`available`] must hold.
pub(crate) fn forward(y: &mut [f32], x: &[f32], weight: &[f32], d: &Conv2dDims) {
    forward_core(y, x, weight, d, Orientation::Forward);
}

/// dy: (N, K, H, W), weight: (K, C, KH, KW) -> dx: (N, C, H, W), overwritten, with BF16 operands.
pub(crate) fn backward_data(dx: &mut [f32], dy: &[f32], weight: &[f32], d: &Conv2dDims) {
    forward_core(dx, dy, weight, d, Orientation::Adjoint);
}

/// How backward-weight lays the batch's planes along a row of BF16 values: `per_slot` images to
/// a slot of `slot` positions (a slot is a whole number of 32-value vectors), the planes of a
/// slot one after the other from its start, zeros after them; and the tap masks of the vectors
/// of a slot.
#[derive(Debug)]
struct Slots {
    /// Values of a plane: H W.
    hw: usize,
    /// Images per slot: 32 / (H W) when a plane is under 32 values and divides 32, else 1.
    per_slot: usize,
    /// Positions per slot: 32 when several images share one, else H W rounded up to 32.
    slot: usize,
    /// Kernel taps: KH KW.
    count: usize,
    /// off_t of each tap, in positions (as [`Taps`]).
    offsets: Vec<isize>,
    /// masks[v * count + t]: bit l set when position v 32 + l of a slot is a pixel whose input
    /// for tap t lies inside its image.
    masks: Vec<u32>,
}

impl Slots {
    fn new(d: &Conv2dDims) -> Slots {
        let taps = Taps::new(d, BF16_LANES);
        let hw = taps.hw;
        let per_slot = if hw < BF16_LANES && BF16_LANES.is_multiple_of(hw) {
            BF16_LANES / hw
        } else {
            1
        };
        let slot = (per_slot * hw).next_multiple_of(BF16_LANES);
        let (k, pad, w, h) = (d.kh, d.pad as isize, d.w as isize, d.h as isize);
        let inside = |s: usize, t: usize| {
            if s >= per_slot * hw {
                return false;
            }
            let p = s % hw;
            let (y, x) = ((p / d.w) as isize, (p % d.w) as isize);
            let (iy, ix) = (y + (t / k) as isize - pad, x + (t % k) as isize - pad);
            (0..h).contains(&iy) && (0..w).contains(&ix)
        };
        let masks = (0..slot / BF16_LANES)
            .flat_map(|v| (0..taps.count).map(move |t| (v, t)))
            .map(|(v, t)| {
                (0..BF16_LANES)
                    .filter(|&l| inside(v * BF16_LANES + l, t))
                    .fold(0u32, |b, l| b | 1 << l)
            })
            .collect();
        Slots {
            hw,
            per_slot,
            slot,
            count: taps.count,
            offsets: taps.offsets,
            masks,
        }
    }

    /// Vectors per slot.
    fn vectors(&self) -> usize {
        self.slot / BF16_LANES
    }
}

/// Copies images [j0, j0 + images) of t: (N, rows, H W) into BF16 rows of `stride` values laid
/// out by `s` (zeros where no pixel is), channels in parallel.
fn pack_rows(pack: &mut [u16], t: &[f32], rows: usize, s: &Slots, j0: usize, images: usize) {
    let stride = pack.len() / rows;
    let hw = s.hw;
    pack.par_chunks_mut(stride)
        .enumerate()
        .for_each(|(r, dst)| {
            for j in 0..images {
                let at = j / s.per_slot * s.slot + j % s.per_slot * hw;
                let src = &t[((j0 + j) * rows + r) * hw..][..hw];
                // SAFETY: `available` (asserted by the caller); `src` is as long as the row's part.
                unsafe { to_bf16(&mut dst[at..at + hw], src) };
                if s.per_slot == 1 {
                    dst[at + hw..at + s.slot].fill(0);
                }
            }
            let end = if s.per_slot == 1 {
                images * s.slot
            } else {
                images * hw
            };
            dst[end..].fill(0);
        });
}

/// One backward-weight task: MR2 output channels from `k0`, NC2 input channels from `c0`, every
/// tap, slots [s0, s1) of a pack. Channels past the last read channel `k0` or `c0` again (their
/// sums are dropped).
struct WeightTask<'a> {
    /// [MR2][NC2][taps] sums, overwritten.
    out: &'a mut [f32],
    dy: &'a [u16],
    x: &'a [u16],
    /// Values from one row of a pack to the next.
    stride: usize,
    k: usize,
    c: usize,
    k0: usize,
    c0: usize,
    s0: usize,
    s1: usize,
    slots: &'a Slots,
}

/// Vectors a task walks for every tap before moving on: its 11 rows stay in the L1 cache across
/// the taps. (The FP32 kernel walks its whole range for each tap instead, a few percent faster
/// there; here that measured no faster on `small` in bf16: BENCHMARKS.md.)
const CHUNK_VECTORS: usize = 32;

/// The backward-weight kernel on one task: dw[k, c, t] = sum_q dy[k, q - off_t] x[c, q] over
/// the task's positions q (see the FP32 `weight_task`), the dy rows the shifted loads under the
/// turned tap's mask, the x rows plain loads (their padding positions are zeros).
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16; the task's slices must hold what their docs say.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::needless_range_loop)]
unsafe fn weight_task(task: &mut WeightTask<'_>) {
    use std::arch::x86_64::*;
    let s = task.slots;
    let (count, vps) = (s.count, s.vectors());
    let mut dy_rows = [task.dy.as_ptr(); MR2];
    for r in 0..MR2 {
        let kr = if task.k0 + r < task.k {
            task.k0 + r
        } else {
            task.k0
        };
        dy_rows[r] = task.dy.as_ptr().add(kr * task.stride);
    }
    let mut x_rows = [task.x.as_ptr(); NC2];
    for i in 0..NC2 {
        let ci = if task.c0 + i < task.c {
            task.c0 + i
        } else {
            task.c0
        };
        x_rows[i] = task.x.as_ptr().add(ci * task.stride);
    }
    let mut stack = [[[_mm512_setzero_ps(); NC2]; MR2]; 9];
    let mut heap = Vec::new();
    let sums: &mut [[[__m512; NC2]; MR2]] = if count <= stack.len() {
        &mut stack[..count]
    } else {
        heap.resize(count, [[_mm512_setzero_ps(); NC2]; MR2]);
        &mut heap
    };
    let (v_lo, v_hi) = (task.s0 * vps, task.s1 * vps);
    for c0 in (v_lo..v_hi).step_by(CHUNK_VECTORS) {
        let c1 = (c0 + CHUNK_VECTORS).min(v_hi);
        for t in 0..count {
            let turned = count - 1 - t;
            let back = s.offsets[turned];
            let mut acc = sums[t];
            for v in c0..c1 {
                let mask = s.masks[v % vps * count + turned] as __mmask32;
                let at = v * BF16_LANES;
                let mut a = [_mm512_setzero_si512(); MR2];
                for r in 0..MR2 {
                    let p = dy_rows[r].wrapping_add(at).wrapping_offset(back);
                    a[r] = _mm512_maskz_loadu_epi16(mask, p.cast());
                }
                for i in 0..NC2 {
                    let b: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(x_rows[i].add(at).cast()));
                    for r in 0..MR2 {
                        let ar: __m512bh = std::mem::transmute(a[r]);
                        acc[r][i] = _mm512_dpbf16_ps(acc[r][i], ar, b);
                    }
                }
            }
            sums[t] = acc;
        }
    }
    for (t, acc) in sums.iter().enumerate() {
        for r in 0..MR2 {
            for i in 0..NC2 {
                task.out[(r * NC2 + i) * count + t] = _mm512_reduce_add_ps(acc[r][i]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_task(_: &mut WeightTask<'_>) {
    unreachable!("the BF16 kernels run only where `available` says so")
}

/// Bytes of dy and x rows one task reads per tap (kept in a core's L2 cache), as the FP32 kernel.
const RANGE_BYTES: usize = 512 * 1024;
/// Bytes of one pack of dy and x rows.
const PACK_BYTES: usize = 4 << 20;
/// Values added to each row of a pack (64 bytes): rows a multiple of 4 KiB long would share the
/// L1 cache's sets (a task reads 11 rows at once).
const ROW_SKEW: usize = 32;
/// Tasks backward-weight aims for, whatever the thread count.
const MIN_WEIGHT_TASKS: usize = 32;

/// dy: (N, K, H, W), x: (N, C, H, W) -> dweight: (K, C, KH, KW), accumulated, with BF16
/// operands; `d` must satisfy [`super::applies`] and [`available`] must hold.
///
/// The FP32 `backward_weight`'s plan in BF16 rows: the batch copied a pack of images at a time
/// (up to [`PACK_BYTES`]) into rows laid out by [`Slots`], cut into ranges of slots fixed by the
/// shapes, tasks (range, block of MR2 output channels, block of NC2 input channels) in parallel,
/// and the ranges' sums added into dweight in range order.
pub(crate) fn backward_weight(dweight: &mut [f32], dy: &[f32], x: &[f32], d: &Conv2dDims) {
    assert!(available(), "the BF16 sliding kernels need AVX-512 BF16");
    let s = Slots::new(d);
    let (k_blocks, c_blocks) = (d.k.div_ceil(MR2), d.c.div_ceil(NC2));
    let blocks = k_blocks * c_blocks;
    let n_slots = d.n.div_ceil(s.per_slot);
    // Slots per range: a task's rows within RANGE_BYTES, and enough ranges for the tasks.
    let fit = (RANGE_BYTES / (2 * (MR2 + NC2) * s.slot)).max(1);
    let enough = n_slots.div_ceil(MIN_WEIGHT_TASKS.div_ceil(blocks));
    let per_range = fit.min(enough).max(1);
    let per_pack = ((PACK_BYTES / (2 * (d.k + d.c) * s.slot) / per_range).max(1) * per_range)
        .min(n_slots.div_ceil(per_range) * per_range);
    let stride = per_pack * s.slot + ROW_SKEW;
    let ranges_per_pack = per_pack / per_range;
    let taps = s.count;
    let out_len = MR2 * NC2 * taps;
    // In f32 units of scratch: the two packs (u16, two to an f32) and the sums.
    let pack_f32 = |rows: usize| (rows * stride).div_ceil(2);
    let (dy_len, x_len) = (pack_f32(d.k), pack_f32(d.c));
    scratch::with(dy_len + x_len + ranges_per_pack * blocks * out_len, |buf| {
        let (dy_buf, rest) = buf.split_at_mut(dy_len);
        let (x_buf, sums) = rest.split_at_mut(x_len);
        let dy_pack = &mut lanes16(dy_buf)[..d.k * stride];
        let x_pack = &mut lanes16(x_buf)[..d.c * stride];
        for slot0 in (0..n_slots).step_by(per_pack) {
            let slots_here = per_pack.min(n_slots - slot0);
            let j0 = slot0 * s.per_slot;
            let images = (slots_here * s.per_slot).min(d.n - j0);
            pack_rows(dy_pack, dy, d.k, &s, j0, images);
            pack_rows(x_pack, x, d.c, &s, j0, images);
            let (dy_pack, x_pack) = (&*dy_pack, &*x_pack);
            let ranges = slots_here.div_ceil(per_range);
            let sums = &mut sums[..ranges * blocks * out_len];
            sums.par_chunks_mut(out_len)
                .enumerate()
                .for_each(|(i, out)| {
                    let (range, kb, cb) = (i / blocks, i / c_blocks % k_blocks, i % c_blocks);
                    let mut task = WeightTask {
                        out,
                        dy: dy_pack,
                        x: x_pack,
                        stride,
                        k: d.k,
                        c: d.c,
                        k0: kb * MR2,
                        c0: cb * NC2,
                        s0: range * per_range,
                        s1: ((range + 1) * per_range).min(slots_here),
                        slots: &s,
                    };
                    // SAFETY: `available` (asserted above); the packs hold `stride` values per row,
                    // every slot's vectors inside it, and the masked loads touch only the lanes of
                    // pixels of the pack's images.
                    unsafe { weight_task(&mut task) }
                });
            super::add_range_sums(dweight, sums, d, (MR2, NC2), ranges);
        }
    });
}

#[cfg(test)]
mod tests {
    //! The BF16 kernels against the im2col path run in FP32 on operands rounded to BF16 first
    //! (the same products, exact in FP32 either way; only the order of the FP32 sums differs),
    //! on odd shapes; the same bits for any thread count. Skipped, saying so, on a CPU without
    //! AVX-512 BF16.

    use super::*;
    use crate::conv2d::{cpu, Conv2dGeom};
    use crate::precision::bf16_round;

    /// As the FP32 sliding test's bound (`tests.rs`): u r per path for an output that sums r
    /// products of values in [-1, 1], 4x margin for the different order of the sums. The
    /// operands' rounding to BF16 is the same on both sides, so it is not in the bound.
    fn tolerance(r: usize) -> f64 {
        const U: f64 = f32::EPSILON as f64 / 2.0;
        2.0 * 4.0 * U * r as f64
    }

    fn skip() -> bool {
        if available() {
            return false;
        }
        eprintln!("skipped: this CPU has no AVX-512 BF16 (or KERNELS_ISA chose narrower kernels)");
        true
    }

    /// The FP32 test's random operands of shape (n, c, k, h, w, kernel), x, weight and dy
    /// rounded to BF16, and their dims.
    fn case(
        shape: (usize, usize, usize, usize, usize, usize),
        seed: u64,
    ) -> ([Vec<f32>; 4], Conv2dDims) {
        let ([x, w, dy, dw0], d) = super::super::tests::case(shape, seed);
        let round = |v: Vec<f32>| v.into_iter().map(bf16_round).collect();
        ([round(x), round(w), round(dy), dw0], d)
    }

    /// [y, dx, dweight] of the BF16 kernels; outputs start as NaN (dweight as `dw0`).
    fn run(x: &[f32], w: &[f32], dy: &[f32], dw0: &[f32], d: &Conv2dDims) -> [Vec<f32>; 3] {
        let mut y = vec![f32::NAN; dy.len()];
        forward(&mut y, x, w, d);
        let mut dx = vec![f32::NAN; x.len()];
        backward_data(&mut dx, dy, w, d);
        let mut dw = dw0.to_vec();
        backward_weight(&mut dw, dy, x, d);
        [y, dx, dw]
    }

    #[test]
    fn bf16_kernels_match_im2col_on_bf16_operands() {
        if skip() {
            return;
        }
        // The FP32 test's shapes, and small planes that share a 32-value vector (2x2 maps, 4
        // images each) with a batch that leaves the last vector part empty, and 4x4 maps of
        // more channels than one register tile, over several packs and ranges.
        let extra = [
            (11, 9, 4, 2, 2, 3),
            (3, 5, 7, 4, 4, 3),
            (40, 64, 48, 4, 4, 3),
        ];
        let shapes = super::super::tests::ODD_SHAPES.into_iter().chain(extra);
        for (i, shape) in shapes.enumerate() {
            let ([x, w, dy, dw0], d) = case(shape, 300 + i as u64);
            let mut want_y = vec![0.0; dy.len()];
            cpu::forward(&mut want_y, &x, &w, &d).unwrap();
            let mut want_dx = vec![0.0; x.len()];
            cpu::backward_data(&mut want_dx, &dy, &w, &d).unwrap();
            let mut want_dw = dw0.clone();
            cpu::backward_weight(&mut want_dw, &dy, &x, &d).unwrap();
            let got = run(&x, &w, &dy, &dw0, &d);
            let kk = d.kh * d.kw;
            let sums = [kk * d.c, kk * d.k, d.n * d.h * d.w];
            for (p, (name, want)) in [("y", want_y), ("dx", want_dx), ("dweight", want_dw)]
                .into_iter()
                .enumerate()
            {
                let tol = tolerance(sums[p]);
                let err = |i: usize| (got[p][i] as f64 - want[i] as f64).abs();
                if let Some(i) = (0..want.len()).find(|&i| err(i).is_nan() || err(i) > tol) {
                    panic!(
                        "{shape:?}: {name}: first bad index {i}: got {}, want {} (tolerance \
                         {tol:.3e})",
                        got[p][i], want[i]
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_kernels_give_the_same_bits_for_any_thread_count() {
        if skip() {
            return;
        }
        for (i, shape) in [
            (41, 7, 10, 6, 5, 3),
            (9, 24, 17, 16, 16, 3),
            (45, 16, 8, 4, 4, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let ([x, w, dy, dw0], d) = case(shape, 400 + i as u64);
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| run(&x, &w, &dy, &dw0, &d))
            };
            let one = on(1);
            for threads in [2, 3] {
                assert!(
                    one == on(threads),
                    "{shape:?}: an output differs between 1 and {threads} threads"
                );
            }
        }
    }

    #[test]
    fn slots_put_small_planes_side_by_side() {
        let d = |h: usize, w: usize| {
            Conv2dDims::new("test", &[1, 1, h, w], &[1, 1, 3, 3], Conv2dGeom::SAME_3X3).unwrap()
        };
        // 4x4 planes: two images to a 32-value vector.
        let s = Slots::new(&d(4, 4));
        assert_eq!((s.per_slot, s.slot, s.vectors()), (2, 32, 1));
        // The centre tap reads every pixel of both images; tap (0, 0) the pixels with y, x >= 1
        // of each (bits 5, 6, 7, 9, ... of the first image, the same 16 higher for the second).
        assert_eq!(s.masks[4], u32::MAX);
        let first: u32 = [5, 6, 7, 9, 10, 11, 13, 14, 15]
            .iter()
            .map(|b| 1 << b)
            .sum();
        assert_eq!(s.masks[0], first | first << 16);
        // 5x7 planes: one image to a slot of two vectors, the last 29 positions empty.
        let s = Slots::new(&d(5, 7));
        assert_eq!((s.per_slot, s.slot, s.vectors()), (1, 64, 2));
        assert_eq!(s.masks[9 + 4], 0b111);
    }
}
