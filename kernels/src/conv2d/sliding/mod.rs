//! Direct convolution without im2col ("sliding"), for the convolutions that keep the map's size:
//! stride 1, an odd square kernel, pad (KH - 1) / 2 (every convolution of the network).
//!
//! Then each kernel tap t = (ky, kx) reads, for output pixel p = y W + x of a plane, the input
//! at p + off_t, off_t = (ky - pad) W + (kx - pad), where that lies inside the map (0 outside).
//! A vector of output pixels (LANES consecutive positions of one plane) therefore reads, for
//! each tap and input channel, one vector of the input plane at a fixed offset, with the lanes
//! whose input falls outside the map masked off (a masked load touches only the selected lanes'
//! memory, so the offset may point before or past the plane). No im2col copy, no packing of the
//! input, and the vectors run along pixels, so 3 or 8 channels fill them as well as 512.
//!
//! - forward: y[n, k, p] = sum_t sum_c w[k, c, t] x[n, c, p + off_t]. A register tile holds MR
//!   output channels by NR pixel vectors; for each channel and tap it loads NR input vectors and
//!   broadcasts MR weights (packed [c][tap][MR] per block of MR output channels).
//! - backward-data: dx[n, c, p] = sum_t sum_k w[k, c, T-1-t] dy[n, k, p + off_t] (T taps, the
//!   kernel turned by 180 degrees: off_{T-1-t} = -off_t): the forward's kernel with the weight
//!   packed the other way round.
//! - backward-weight: dw[k, c, t] += sum_n sum_p dy[n, k, p] x[n, c, p + off_t]. A register
//!   tile holds MR2 output channels by NC2 input channels of one tap, each a vector of partial
//!   sums over pixels; the lanes are added at the end.
//!
//! Determinism: forward and backward-data compute each output from one tile in a fixed order
//! (channel, then tap), whichever thread runs it. Backward-weight splits the batch into image
//! ranges fixed by the shapes (not by the thread count), sums each range in a fixed order and
//! adds the ranges' sums in range order. So no result depends on the number of threads; each
//! instruction set rounds in its own order (its lane count), which the tests bound.

pub(crate) mod bf16;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use super::{scratch, Conv2dDims};
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{Isa, Portable, Simd};
use crate::Result;

/// Whether the sliding kernels compute `d`: stride 1, an odd square kernel, "same" padding.
pub(super) fn applies(d: &Conv2dDims) -> bool {
    d.stride == 1 && d.kh == d.kw && d.kh % 2 == 1 && 2 * d.pad + 1 == d.kh
}

/// The register tiles of an instruction set: (MR, NR) of the forward, (MR2, NC2) of
/// backward-weight. AVX-512 (32 registers): 8 x 3 = 24 accumulators, 3 input vectors and one
/// broadcast weight; 3 x 8 = 24 accumulators, 3 dy vectors, one x vector. AVX2 (16 registers,
/// masks in registers too): 4 x 2 and 2 x 4, 8 accumulators.
fn tiles(isa: Isa) -> ((usize, usize), (usize, usize)) {
    match isa {
        Isa::Avx512 => ((8, 3), (3, 8)),
        Isa::Avx2 | Isa::Portable => ((4, 2), (2, 4)),
    }
}

/// The sizes and per-tap tables of one plane, for an instruction set of `lanes` lanes.
#[derive(Debug)]
struct Taps {
    /// Values of a plane: H W.
    hw: usize,
    lanes: usize,
    /// Vectors per plane: ceil(H W / lanes), the last one partial when H W is not a multiple.
    vectors: usize,
    /// Kernel taps: KH KW.
    count: usize,
    /// off_t of each tap.
    offsets: Vec<isize>,
    /// masks[v * count + t]: bit l set when lane l of vector v is a pixel of the plane whose
    /// input for tap t lies inside the map; then one more row of `count` zeros.
    masks: Vec<u32>,
    /// tails[v]: bit l set when lane l of vector v is a pixel of the plane.
    tails: Vec<u32>,
}

impl Taps {
    fn new(d: &Conv2dDims, lanes: usize) -> Taps {
        let (h, w, k, pad) = (d.h, d.w, d.kh, d.pad);
        let hw = h * w;
        let vectors = hw.div_ceil(lanes);
        let count = k * k;
        let offsets = (0..count)
            .map(|t| (t / k) as isize * w as isize + (t % k) as isize - (pad * w + pad) as isize)
            .collect();
        let inside = |p: usize, t: usize| {
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            let (iy, ix) = (
                y + (t / k) as isize - pad as isize,
                x + (t % k) as isize - pad as isize,
            );
            (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix)
        };
        let bits = |v: usize, keep: &dyn Fn(usize) -> bool| {
            (0..lanes)
                .filter(|&l| v * lanes + l < hw && keep(v * lanes + l))
                .fold(0u32, |b, l| b | 1 << l)
        };
        let masks = (0..vectors)
            .flat_map(|v| (0..count).map(move |t| (v, t)))
            .map(|(v, t)| bits(v, &|p| inside(p, t)))
            .chain(std::iter::repeat_n(0, count))
            .collect();
        let tails = (0..vectors).map(|v| bits(v, &|_| true)).collect();
        Taps {
            hw,
            lanes,
            vectors,
            count,
            offsets,
            masks,
            tails,
        }
    }
}

/// Which way [`pack`] reads the weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orientation {
    /// Rows are the K output channels, the depth the C input channels, taps as stored.
    Forward,
    /// Rows are the C input channels, the depth the K output channels, taps turned by 180
    /// degrees: backward-data.
    Adjoint,
}

/// Packs weight: (K, C, KH, KW) for the tile's MR rows: block b holds [depth][tap][MR], row
/// b MR + m of the product in lane m; rows past the last are 0. Blocks in parallel. Returns
/// (rows, depth).
fn pack(
    packed: &mut [f32],
    weight: &[f32],
    d: &Conv2dDims,
    taps: usize,
    mr: usize,
    orient: Orientation,
) -> (usize, usize) {
    let (rows, depth) = match orient {
        Orientation::Forward => (d.k, d.c),
        Orientation::Adjoint => (d.c, d.k),
    };
    packed
        .par_chunks_exact_mut(taps * depth * mr)
        .enumerate()
        .for_each(|(b, block)| {
            block.fill(0.0);
            for m in 0..mr.min(rows - b * mr) {
                let row = b * mr + m;
                for e in 0..depth {
                    // The taps of weight[k, c] are contiguous; backward-data reads them turned.
                    let (kernel, turned) = match orient {
                        Orientation::Forward => (&weight[(row * d.c + e) * taps..][..taps], false),
                        Orientation::Adjoint => (&weight[(e * d.c + row) * taps..][..taps], true),
                    };
                    let dst = &mut block[e * taps * mr..][..taps * mr];
                    for t in 0..taps {
                        dst[t * mr + m] = kernel[if turned { taps - 1 - t } else { t }];
                    }
                }
            }
        });
    (rows, depth)
}

/// What one forward task reads and writes: a group of images.
struct Group<'a> {
    /// (G, rows, H W), overwritten.
    out: &'a mut [f32],
    /// (G, depth, H W).
    input: &'a [f32],
    /// [block][depth][tap][MR] from [`pack`].
    packed: &'a [f32],
    rows: usize,
    depth: usize,
    taps: &'a Taps,
}

/// The forward kernel on one group: out[j, r, p] = sum_t sum_e packed(r, t, e) input[j, e,
/// p + off_t]. Blocks of MR rows one after the other (a block's packed weights stay in cache),
/// and within a block the group's pixel vectors NR at a time.
///
/// # Safety
/// `S`'s instruction set must be available; `g`'s slices must hold what their docs say.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn forward_group<S: Simd, const MR: usize, const NR: usize>(g: &mut Group<'_>) {
    let Taps {
        hw,
        lanes,
        vectors,
        count,
        ..
    } = *g.taps;
    let (rows, depth) = (g.rows, g.depth);
    let images = g.input.len() / (depth * hw);
    let columns = images * vectors;
    let (input, out) = (g.input.as_ptr(), g.out.as_mut_ptr());
    for block in 0..rows.div_ceil(MR) {
        let w_block = g.packed.as_ptr().add(block * count * depth * MR);
        let live_rows = MR.min(rows - block * MR);
        for first in (0..columns).step_by(NR) {
            // Column i of the tile: pixel vector v of image j, or nothing past the last.
            let mut src = [input; NR];
            let mut dst = [out; NR];
            let mut vec = [usize::MAX; NR];
            for i in 0..NR {
                let col = first + i;
                if col < columns {
                    let (j, v) = (col / vectors, col % vectors);
                    src[i] = input.add(j * depth * hw + v * lanes);
                    dst[i] = out.add((j * rows + block * MR) * hw + v * lanes);
                    vec[i] = v;
                }
            }
            // Each column's tap masks (a row of zeros for a column past the last).
            let mut masks = [g.taps.masks.as_ptr(); NR];
            for i in 0..NR {
                let v = if vec[i] == usize::MAX {
                    vectors
                } else {
                    vec[i]
                };
                masks[i] = g.taps.masks.as_ptr().add(v * count);
            }
            let mut acc = [[S::zero(); NR]; MR];
            let mut w = w_block;
            for e in 0..depth {
                // The channel's taps one after the other: their loads share cache lines.
                for t in 0..count {
                    let off = *g.taps.offsets.get_unchecked(t);
                    let mut b = [S::zero(); NR];
                    for i in 0..NR {
                        let at = src[i].wrapping_add(e * hw).wrapping_offset(off);
                        b[i] = S::load_masked(at, S::mask(*masks[i].add(t)));
                    }
                    for r in 0..MR {
                        let a = S::splat(*w.add(r));
                        for i in 0..NR {
                            acc[r][i] = S::fmadd(a, b[i], acc[r][i]);
                        }
                    }
                    w = w.add(MR);
                }
            }
            for i in 0..NR {
                if vec[i] == usize::MAX {
                    continue;
                }
                let tail = S::mask(g.taps.tails[vec[i]]);
                // Constant bounds keep `acc` in registers (a loop to `live_rows` would index it
                // at run time and put it in memory).
                for r in 0..MR {
                    if r < live_rows {
                        S::store_masked(dst[i].add(r * hw), acc[r][i], tail);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_group_avx512(g: &mut Group<'_>) {
    forward_group::<Avx512, 8, 3>(g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_group_avx2(g: &mut Group<'_>) {
    forward_group::<Avx2, 4, 2>(g)
}

/// [`forward_group`] with `isa`'s instruction set and tile.
fn forward_group_on(isa: Isa, g: &mut Group<'_>) {
    debug_assert!(isa.available());
    match isa {
        // SAFETY: `isa` is available (the callers take it from `Isa::available` or
        // `simd::isa`); the slices of `g` were sized by `forward_core`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { forward_group_avx512(g) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { forward_group_avx2(g) },
        // SAFETY: plain Rust; the slices as above.
        _ => unsafe { forward_group::<Portable, 4, 2>(g) },
    }
}

/// Bytes of one task's input group that should stay in a core's L2 cache (half of a 1 to 2 MiB
/// L2, the rest for the packed weights and the outputs).
const GROUP_BYTES: usize = 512 * 1024;

/// The forward core shared by forward and backward-data: input: (N, depth, H W) ->
/// out: (N, rows, H W), overwritten, with the weight packed by `orient`. Groups of images run in
/// parallel, each through [`forward_group`]; a group is as many images as fit [`GROUP_BYTES`],
/// and small enough to give every thread about four groups.
fn forward_core(
    isa: Isa,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
    orient: Orientation,
) {
    let ((mr, _), _) = tiles(isa);
    let taps = Taps::new(d, isa.lanes());
    let (rows, depth) = match orient {
        Orientation::Forward => (d.k, d.c),
        Orientation::Adjoint => (d.c, d.k),
    };
    let packed_len = rows.div_ceil(mr) * mr * taps.count * depth;
    let image_in = depth * taps.hw;
    let fit = (GROUP_BYTES / (4 * image_in)).max(1);
    let spread = d.n.div_ceil(4 * rayon::current_num_threads());
    let group = fit.min(spread).max(1);
    scratch::with(packed_len, |packed| {
        let (rows, depth) = pack(packed, weight, d, taps.count, mr, orient);
        let packed = &*packed;
        out.par_chunks_mut(group * rows * taps.hw)
            .zip(input.par_chunks(group * image_in))
            .for_each(|(out, input)| {
                forward_group_on(
                    isa,
                    &mut Group {
                        out,
                        input,
                        packed,
                        rows,
                        depth,
                        taps: &taps,
                    },
                )
            });
    });
}

/// x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, H, W), overwritten; `d` must satisfy
/// [`applies`].
pub(super) fn forward(
    isa: Isa,
    y: &mut [f32],
    x: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    forward_core(isa, y, x, weight, d, Orientation::Forward);
    Ok(())
}

/// dy: (N, K, H, W), weight: (K, C, KH, KW) -> dx: (N, C, H, W), overwritten.
pub(super) fn backward_data(
    isa: Isa,
    dx: &mut [f32],
    dy: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    forward_core(isa, dx, dy, weight, d, Orientation::Adjoint);
    Ok(())
}

/// Where the planes of one tensor lie: plane (image j, channel r) at j `image` + r `row`.
/// (N, rows, H W) as stored: image = rows H W, row = H W; a pack: image = H W, row = its row.
#[derive(Debug, Clone, Copy)]
struct Planes {
    image: usize,
    row: usize,
}

/// One backward-weight task: MR2 output channels from `k0`, NC2 input channels from `c0`, every
/// tap, images [j0, j1) (see [`backward_weight`]). Channels past the last read channel `k0` or
/// `c0` again (their sums are dropped).
struct WeightTask<'a> {
    /// [MR2][NC2][taps] sums over the task's images, overwritten.
    out: &'a mut [f32],
    /// dy's planes, laid out as `dy_planes` says.
    dy: &'a [f32],
    /// x's planes, laid out as `x_planes` says.
    x: &'a [f32],
    dy_planes: Planes,
    x_planes: Planes,
    k: usize,
    c: usize,
    k0: usize,
    c0: usize,
    j0: usize,
    j1: usize,
    taps: &'a Taps,
}

/// One step of [`weight_task`]: acc[r][i] += dy_row_r x_row_i, one vector each, the dy rows
/// read at `dy_at` under the turned tap's `mask`, the x rows at `x_at` under `tail`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn weight_step<S: Simd, const MR2: usize, const NC2: usize>(
    acc: &mut [[S::V; NC2]; MR2],
    (dy, x): (&[*const f32; MR2], &[*const f32; NC2]),
    (dy_at, x_at): (usize, usize),
    (mask, tail): (S::M, S::M),
) {
    let mut a = [S::zero(); MR2];
    for r in 0..MR2 {
        a[r] = S::load_masked(dy[r].wrapping_add(dy_at), mask);
    }
    for i in 0..NC2 {
        let b = S::load_masked(x[i].add(x_at), tail);
        for r in 0..MR2 {
            acc[r][i] = S::fmadd(a[r], b, acc[r][i]);
        }
    }
}

/// Pixel vectors a backward-weight task walks for every tap before moving on, with AVX2: the
/// chunk's rows (MR2 + NC2 = 6 vectors a step for 8 FMAs) stay in the L1 cache across the taps.
const CHUNK_VECTORS: usize = 32;

/// The chunk of an AVX-512 backward-weight task: all of its pixels. Its 11 loads a step feed 24
/// FMAs, few enough to come from the L2 cache, and each tap's accumulators stay in registers
/// for the whole walk; 32-vector chunks made whole training steps slower by about 3.5%
/// (`small`) and 9% (`tiny`) (BENCHMARKS.md, "Backward-weight without L1 chunks").
const WHOLE_RANGE: usize = 1 << 30;

/// The backward-weight kernel on one task: sums over its images and pixel vectors into one
/// vector per (k, c, tap), then the lanes. The sum runs over the input pixels q:
/// dw[k, c, t] = sum_q dy[k, q - off_t] x[c, q], where q - off_t = q + off_{T-1-t} is a pixel
/// whose tap t reads q (the turned tap's mask): the MR2 dy rows are the shifted, masked loads
/// and the NC2 x rows plain ones, which stay aligned with the vectors (fewer loads that cross
/// cache lines).
///
/// The pixels are taken in chunks of about `CHUNK` vectors (a run of one image's vectors, or
/// whole planes of a few images when planes are small; [`CHUNK_VECTORS`] or [`WHOLE_RANGE`]),
/// and each chunk is walked once per tap (while it sits in the L1 cache, if small), each tap's
/// accumulators loaded from and stored to memory around its walk.
///
/// # Safety
/// `S`'s instruction set must be available; the task's slices must hold what their docs say.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn weight_task<S: Simd, const MR2: usize, const NC2: usize, const CHUNK: usize>(
    task: &mut WeightTask<'_>,
) {
    let Taps {
        lanes,
        vectors,
        count,
        ..
    } = *task.taps;
    let (k, c, dyp, xp) = (task.k, task.c, task.dy_planes, task.x_planes);
    // Row r (i) of the task in image j0; rows past the last repeat the first.
    let mut dy_rows = [task.dy.as_ptr(); MR2];
    for r in 0..MR2 {
        let kr = if task.k0 + r < k {
            task.k0 + r
        } else {
            task.k0
        };
        dy_rows[r] = task.dy.as_ptr().add(task.j0 * dyp.image + kr * dyp.row);
    }
    let mut x_rows = [task.x.as_ptr(); NC2];
    for i in 0..NC2 {
        let ci = if task.c0 + i < c {
            task.c0 + i
        } else {
            task.c0
        };
        x_rows[i] = task.x.as_ptr().add(task.j0 * xp.image + ci * xp.row);
    }
    let rows = (&dy_rows, &x_rows);
    let images = task.j1 - task.j0;
    let (masks, tails, offsets) = (&task.taps.masks, &task.taps.tails, &task.taps.offsets);
    // Each tap's accumulators: on the stack for kernels up to 3x3 (no allocation per task).
    let mut stack = [[[S::zero(); NC2]; MR2]; 9];
    let mut heap = Vec::new();
    let sums: &mut [[[S::V; NC2]; MR2]] = if count <= stack.len() {
        &mut stack[..count]
    } else {
        heap.resize(count, [[S::zero(); NC2]; MR2]);
        &mut heap
    };
    // Chunks: (images, vectors) ranges.
    let (chunk_images, chunk_vectors) = if vectors >= CHUNK {
        (1, CHUNK)
    } else {
        ((CHUNK / vectors).max(1), vectors)
    };
    for j0 in (0..images).step_by(chunk_images) {
        let j1 = (j0 + chunk_images).min(images);
        for v0 in (0..vectors).step_by(chunk_vectors) {
            let v1 = (v0 + chunk_vectors).min(vectors);
            for t in 0..count {
                let turned = count - 1 - t;
                // dy at q - off_t, as a wrapping offset from q.
                let back = offsets[turned];
                let mut acc = sums[t];
                for j in j0..j1 {
                    for v in v0..v1 {
                        let mask = S::mask(masks[v * count + turned]);
                        let tail = S::mask(tails[v]);
                        let dy_at = (j * dyp.image + v * lanes).wrapping_add_signed(back);
                        let x_at = j * xp.image + v * lanes;
                        weight_step::<S, MR2, NC2>(&mut acc, rows, (dy_at, x_at), (mask, tail));
                    }
                }
                sums[t] = acc;
            }
        }
    }
    for (t, acc) in sums.iter().enumerate() {
        for r in 0..MR2 {
            for i in 0..NC2 {
                task.out[(r * NC2 + i) * count + t] = S::reduce(acc[r][i]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_task_avx512(task: &mut WeightTask<'_>) {
    weight_task::<Avx512, 3, 8, WHOLE_RANGE>(task)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_task_avx2(task: &mut WeightTask<'_>) {
    weight_task::<Avx2, 2, 4, CHUNK_VECTORS>(task)
}

/// [`weight_task`] with `isa`'s instruction set and tile.
fn weight_task_on(isa: Isa, task: &mut WeightTask<'_>) {
    debug_assert!(isa.available());
    match isa {
        // SAFETY: `isa` is available; the task's slices were sized by `backward_weight`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { weight_task_avx512(task) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { weight_task_avx2(task) },
        // SAFETY: plain Rust; the slices as above.
        _ => unsafe { weight_task::<Portable, 2, 4, CHUNK_VECTORS>(task) },
    }
}

/// Bytes of dy and x rows one backward-weight task reads per tap: kept in a core's L2 cache
/// while the task walks them once per tap.
const RANGE_BYTES: usize = 512 * 1024;

/// Bytes of one pack of dy and x rows (see [`backward_weight`]).
const PACK_BYTES: usize = 4 << 20;

/// Floats added to the length of each row of a pack: rows whose length is a multiple of 4 KiB
/// would share the L1 cache's sets (a task reads up to 11 rows at once).
const ROW_SKEW: usize = 16;

/// Backward-weight aims for at least this many tasks, whatever the thread count, so that the
/// threads (up to a dozen or so) share them evenly.
const MIN_WEIGHT_TASKS: usize = 32;

/// Copies images [j0, j0 + images) of t: (N, rows, H W) into pack: row r at r `row` holds
/// their planes of channel r one after the other.
fn pack_rows(pack: &mut [f32], t: &[f32], (rows, hw): (usize, usize), j0: usize, images: usize) {
    let row = pack.len() / rows;
    pack.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
        for j in 0..images {
            dst[j * hw..][..hw].copy_from_slice(&t[((j0 + j) * rows + r) * hw..][..hw]);
        }
    });
}

/// dweight: (K, C, taps) += the backward-weight tasks' sums, range after range: `sums` holds
/// `ranges` ranges of tasks (range, block of MR2 output channels, block of NC2 input channels),
/// each [MR2][NC2][taps]. One task per output channel; the ranges are added in order, so the
/// result does not depend on the thread count.
fn add_range_sums(
    dweight: &mut [f32],
    sums: &[f32],
    d: &Conv2dDims,
    (mr2, nc2): (usize, usize),
    ranges: usize,
) {
    let taps = d.kh * d.kw;
    let (k_blocks, c_blocks) = (d.k.div_ceil(mr2), d.c.div_ceil(nc2));
    let slot = mr2 * nc2 * taps;
    dweight
        .par_chunks_mut(d.c * taps)
        .enumerate()
        .for_each(|(k, dw_k)| {
            let (kb, r) = (k / mr2, k % mr2);
            for (ci, dw_kc) in dw_k.chunks_exact_mut(taps).enumerate() {
                let (cb, i) = (ci / nc2, ci % nc2);
                for range in 0..ranges {
                    let task = (range * k_blocks + kb) * c_blocks + cb;
                    let s = &sums[task * slot + (r * nc2 + i) * taps..][..taps];
                    for (o, v) in dw_kc.iter_mut().zip(s) {
                        *o += v;
                    }
                }
            }
        });
}

/// Planes of fewer vectors than this are packed for backward-weight (see there).
const PACK_BELOW_VECTORS: usize = 8;

/// dy: (N, K, H, W), x: (N, C, H, W) -> dweight: (K, C, KH, KW), accumulated.
///
/// The batch is cut into image ranges fixed by the shapes (not by the thread count): as many
/// images as keep a task's rows within [`RANGE_BYTES`], and enough ranges for
/// [`MIN_WEIGHT_TASKS`] tasks. Tasks are (range, block of MR2 output channels, block of NC2 input
/// channels); each writes its sums to its own slot, and the ranges' sums are added into dweight
/// in range order.
///
/// Small planes (under [`PACK_BELOW_VECTORS`] vectors: 8x8 and 4x4 maps) are first copied,
/// a few ranges at a time (up to [`PACK_BYTES`]), into packs that hold each channel's planes one
/// after the other: in the batch's layout the planes of one channel lie a whole image apart, and
/// a task would take each of its few vectors from another page. Larger planes are read in
/// place, a plane being a long enough run of consecutive memory.
pub(super) fn backward_weight(
    isa: Isa,
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let (_, (mr2, nc2)) = tiles(isa);
    let taps = Taps::new(d, isa.lanes());
    let hw = taps.hw;
    let (k_blocks, c_blocks) = (d.k.div_ceil(mr2), d.c.div_ceil(nc2));
    let fit = (RANGE_BYTES / (4 * (mr2 + nc2) * hw)).max(1);
    let enough = d.n.div_ceil(MIN_WEIGHT_TASKS.div_ceil(k_blocks * c_blocks));
    let per_range = fit.min(enough).max(1);
    let pack = taps.vectors < PACK_BELOW_VECTORS;
    let per_pack = if pack {
        (PACK_BYTES / (4 * (d.k + d.c) * hw) / per_range).max(1) * per_range
    } else {
        d.n
    };
    let slot = mr2 * nc2 * taps.count;
    let blocks = k_blocks * c_blocks;
    let max_row = per_pack.min(d.n) * hw + ROW_SKEW;
    let max_ranges = per_pack.min(d.n).div_ceil(per_range);
    let (dy_len, x_len) = if pack {
        (d.k * max_row, d.c * max_row)
    } else {
        (0, 0)
    };
    scratch::with(dy_len + x_len + max_ranges * blocks * slot, |buf| {
        let (dy_pack, rest) = buf.split_at_mut(dy_len);
        let (x_pack, sums) = rest.split_at_mut(x_len);
        for j_pack in (0..d.n).step_by(per_pack) {
            let images = per_pack.min(d.n - j_pack);
            let (dy_src, x_src, dy_planes, x_planes) = if pack {
                let row = images * hw + ROW_SKEW;
                let (dy_pack, x_pack) = (&mut dy_pack[..d.k * row], &mut x_pack[..d.c * row]);
                pack_rows(dy_pack, dy, (d.k, hw), j_pack, images);
                pack_rows(x_pack, x, (d.c, hw), j_pack, images);
                let planes = Planes { image: hw, row };
                (&*dy_pack, &*x_pack, planes, planes)
            } else {
                let dy_planes = Planes {
                    image: d.k * hw,
                    row: hw,
                };
                let x_planes = Planes {
                    image: d.c * hw,
                    row: hw,
                };
                (
                    &dy[j_pack * dy_planes.image..],
                    &x[j_pack * x_planes.image..],
                    dy_planes,
                    x_planes,
                )
            };
            let ranges = images.div_ceil(per_range);
            let sums = &mut sums[..ranges * blocks * slot];
            sums.par_chunks_mut(slot).enumerate().for_each(|(i, out)| {
                let (range, kb, cb) = (i / blocks, i / c_blocks % k_blocks, i % c_blocks);
                weight_task_on(
                    isa,
                    &mut WeightTask {
                        out,
                        dy: dy_src,
                        x: x_src,
                        dy_planes,
                        x_planes,
                        k: d.k,
                        c: d.c,
                        k0: kb * mr2,
                        c0: cb * nc2,
                        j0: range * per_range,
                        j1: ((range + 1) * per_range).min(images),
                        taps: &taps,
                    },
                )
            });
            add_range_sums(dweight, sums, d, (mr2, nc2), ranges);
        }
    });
    Ok(())
}
