//! Per-image training augmentation on `u8` images (3, 32, 32), before normalisation.
//!
//! Every random choice is keyed by counters, never by a running RNG: the seed policy's augmenter
//! order by (seed, epoch, batch position) ([`batch_op_order`]), everything else an image draws by
//! (seed, epoch, dataset index) ([`image_rng`]). A batch's augmentation is therefore a pure
//! function of those numbers: it does not depend on the thread count or on whether the run was
//! resumed, and a loader can start at any batch.
//!
//! The seed's policy ([`Augment::Seed`], SPEC "Training augmentation", imgaug 0.2.x
//! `SomeOf((0, None), [Crop, Fliplr, CoarseDropout], random_order=True)`): per image n ~ U{0..3}
//! distinct augmenters, run in one random order per batch. The crop is resized back to 32x32 as
//! OpenCV's INTER_AREA enlarges ([`crop_resize`]); coarse dropout draws its grid as imgaug does
//! ([`Dropout::draw`]). Both are checked against real OpenCV in `tests/opencv.rs`.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::format::{IMAGE_BYTES, PLANE, SIDE};
use crate::{Error, Result};

/// One image: (3, 32, 32) bytes, CHW.
pub type Image = [u8; IMAGE_BYTES];

/// The augmentation policy of a training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    /// The seed's policy: per image a random subset of crop-and-resize (0..=12 pixels per side,
    /// INTER_AREA), horizontal flip (p = 0.5) and coarse dropout, run in one random order per batch.
    Seed,
    /// The common CIFAR policy: pad 4 pixels with zeros, random 32x32 crop, horizontal flip.
    Standard,
    /// No augmentation.
    None,
}

/// Largest crop of one side in the seed's policy, in pixels.
pub const MAX_CROP: usize = 12;
/// Zero padding of the standard policy, in pixels per side.
pub const STANDARD_PAD: usize = 4;

/// Pixels cut from each side of an image before it is resized back to 32x32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Crop {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// Whether coarse dropout draws one mask for all three channels or one per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskMode {
    Shared,
    PerChannel,
}

/// The RNG of image `index` in `epoch`: ChaCha8 keyed by the three numbers (and a tag that keeps
/// it apart from the shuffle's stream).
pub fn image_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    keyed_rng(*b"augment\0", seed, epoch, index)
}

/// A ChaCha8 RNG whose 256-bit key is `tag`, `seed`, `epoch`, `index`: distinct inputs give
/// independent streams.
pub(crate) fn keyed_rng(tag: [u8; 8], seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&tag);
    key[8..16].copy_from_slice(&seed.to_le_bytes());
    key[16..24].copy_from_slice(&epoch.to_le_bytes());
    key[24..].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Mirrors each row of every channel: x -> 31 - x.
pub fn flip_horizontal(img: &mut Image) {
    for row in img.chunks_exact_mut(SIDE) {
        row.reverse();
    }
}

/// Crops `crop` pixels off the sides of `src` and resizes the rest back to 32x32 as OpenCV's
/// `resize(..., INTER_AREA)` enlarges an 8-bit image, bit for bit (imgaug 0.2.x picks INTER_AREA
/// whenever it enlarges). src: (3, 32, 32) -> dst: (3, 32, 32).
///
/// Each axis is a two-tap blend with weights from [`area_taps`], in OpenCV's fixed point: the
/// weights are rounded to multiples of 1/2048, the horizontal pass keeps the exact integer sums,
/// and the vertical pass shifts and rounds as `VResizeLinear<uchar>` does:
/// out = ((w0 * (row0 >> 4)) >> 16) + ((w1 * (row1 >> 4)) >> 16) + 2) >> 2. An axis cropped by 0
/// is copied exactly. `tests/opencv.rs` checks every crop size of both axes against OpenCV.
///
/// # Errors
/// [`Error::Invalid`] if the crop leaves no pixel (top + bottom >= 32 or left + right >= 32).
pub fn crop_resize(dst: &mut Image, src: &Image, crop: Crop) -> Result<()> {
    if crop.top + crop.bottom >= SIDE || crop.left + crop.right >= SIDE {
        return Err(Error::Invalid {
            op: "crop_resize",
            msg: format!("crop {crop:?} leaves no pixel of a {SIDE}x{SIDE} image"),
        });
    }
    let rows = area_taps(SIDE - crop.top - crop.bottom);
    let cols = area_taps(SIDE - crop.left - crop.right);
    // One source row of the crop resized horizontally: sums of weight * byte, weights summing
    // to about 2048.
    let horizontal = |plane: &[u8], sy: usize| -> [i32; SIDE] {
        let row = &plane[(crop.top + sy) * SIDE + crop.left..];
        std::array::from_fn(|dx| {
            let t = cols[dx];
            i32::from(row[t.src[0]]) * t.weight[0] + i32::from(row[t.src[1]]) * t.weight[1]
        })
    };
    for (dst_plane, src_plane) in dst.chunks_exact_mut(PLANE).zip(src.chunks_exact(PLANE)) {
        for (dst_row, t) in dst_plane.chunks_exact_mut(SIDE).zip(&rows) {
            let (r0, r1) = (
                horizontal(src_plane, t.src[0]),
                horizontal(src_plane, t.src[1]),
            );
            for ((out, &a), &b) in dst_row.iter_mut().zip(&r0).zip(&r1) {
                let v =
                    (((t.weight[0] * (a >> 4)) >> 16) + ((t.weight[1] * (b >> 4)) >> 16) + 2) >> 2;
                // The weights sum to at most 2049, so v <= 255; OpenCV's vector path saturates.
                *out = v.clamp(0, 255) as u8;
            }
        }
    }
    Ok(())
}

/// OpenCV's fixed-point scale of resize weights: 2^11 (`INTER_RESIZE_COEF_SCALE`).
const RESIZE_ONE: f32 = 2048.0;

/// The two taps of one output pixel along one axis: source positions (relative to the crop) and
/// their weights in units of 1/2048.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taps {
    pub src: [usize; 2],
    pub weight: [i32; 2],
}

/// OpenCV's INTER_AREA taps for enlarging `len` (1..=32) pixels to 32, as `resize` computes them
/// when the scale is below 1 (SPEC "Crop"): with inv = 32 / len and scale = 1 / inv in `f64`,
/// output d reads s = floor(d * scale) and f = (d + 1) - (s + 1) * inv (as `f32`),
/// f = 0 if f <= 0 else f - floor(f); the last source pixel takes f = 0; the weights are
/// round_half_even((1 - f) * 2048) and round_half_even(f * 2048).
///
/// # Panics
/// If `len` is 0 or above 32 (callers pass the size left by a checked crop).
pub fn area_taps(len: usize) -> [Taps; SIDE] {
    assert!((1..=SIDE).contains(&len), "area_taps: {len} source pixels");
    let inv = SIDE as f64 / len as f64;
    let scale = 1.0 / inv;
    std::array::from_fn(|d| {
        let mut s = (d as f64 * scale).floor() as usize;
        let f = ((d + 1) as f64 - (s + 1) as f64 * inv) as f32;
        let mut f = if f <= 0.0 { 0.0 } else { f - f.floor() };
        if s >= len - 1 {
            (s, f) = (len - 1, 0.0);
        }
        Taps {
            src: [s, (s + 1).min(len - 1)],
            weight: [
                ((1.0 - f) * RESIZE_ONE).round_ties_even() as i32,
                (f * RESIZE_ONE).round_ties_even() as i32,
            ],
        }
    })
}

/// One coarse-dropout draw for one image (SPEC "Coarse dropout").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability that a cell is dropped.
    pub p: f64,
    /// Cells of the mask grid along y and x.
    pub rows: usize,
    pub cols: usize,
    pub mode: MaskMode,
}

/// Bounds of imgaug's `size_percent=(0.02, 0.25)`: a grid axis has max(floor(32 u), 4) cells.
pub const DROPOUT_SIZE: (f64, f64) = (0.02, 0.25);
/// imgaug's `min_size` of the mask grid, in cells per axis.
pub const DROPOUT_MIN_CELLS: usize = 4;
/// Largest drop probability of the seed's `CoarseDropout((0.0, 0.20), ...)`.
pub const DROPOUT_MAX_P: f64 = 0.2;

impl Dropout {
    /// Draws the parameters as imgaug 0.2.x's
    /// `CoarseDropout((0.0, 0.20), size_percent=(0.02, 0.25), per_channel=0.5)` does per image:
    /// p ~ U(0, 0.2); rows and cols each max(floor(32 u), 4) with their own u ~ U(0.02, 0.25),
    /// so 4..=7 cells per axis; one mask per channel with probability 0.5.
    pub fn draw<R: Rng + ?Sized>(rng: &mut R) -> Dropout {
        let p = rng.random_range(0.0..DROPOUT_MAX_P);
        let mut cells = || {
            let u = rng.random_range(DROPOUT_SIZE.0..DROPOUT_SIZE.1);
            ((SIDE as f64 * u).floor() as usize).max(DROPOUT_MIN_CELLS)
        };
        let (rows, cols) = (cells(), cells());
        let mode = if rng.random_bool(0.5) {
            MaskMode::PerChannel
        } else {
            MaskMode::Shared
        };
        Dropout {
            p,
            rows,
            cols,
            mode,
        }
    }
}

/// Coarse dropout: a `rows` x `cols` grid of cells over the image, each dropped with probability
/// `p`, the mask upscaled (nearest) to 32x32; dropped pixels become 0. With [`MaskMode::Shared`]
/// one mask serves all channels, with [`MaskMode::PerChannel`] each channel draws its own.
/// img: (3, 32, 32), in place.
///
/// # Errors
/// [`Error::Invalid`] unless 0 <= p <= 1 and 1 <= rows, cols <= 32.
pub fn coarse_dropout<R: Rng + ?Sized>(img: &mut Image, d: &Dropout, rng: &mut R) -> Result<()> {
    let cells_ok = |n| (1..=SIDE).contains(&n);
    if !(0.0..=1.0).contains(&d.p) || !cells_ok(d.rows) || !cells_ok(d.cols) {
        return Err(Error::Invalid {
            op: "coarse_dropout",
            msg: format!(
                "p = {} must lie in [0, 1] and rows = {}, cols = {} in 1..=32",
                d.p, d.rows, d.cols
            ),
        });
    }
    let mut mask = [false; SIDE * SIDE];
    let mask = &mut mask[..d.rows * d.cols];
    for (c, plane) in img.chunks_exact_mut(PLANE).enumerate() {
        if c == 0 || d.mode == MaskMode::PerChannel {
            for m in mask.iter_mut() {
                *m = rng.random_bool(d.p);
            }
        }
        drop_cells(plane, mask, d.rows, d.cols)?;
    }
    Ok(())
}

/// Zeroes the pixels of a 32x32 plane whose cell is dropped: pixel (y, x) lies in cell
/// (floor(y rows / 32), floor(x cols / 32)), as OpenCV's `INTER_NEAREST` upscales the grid.
/// plane: (32, 32), dropped: (rows, cols) row-major.
///
/// # Errors
/// [`Error::Invalid`] if the plane is not 32x32 or `dropped` does not hold rows x cols cells.
pub fn drop_cells(plane: &mut [u8], dropped: &[bool], rows: usize, cols: usize) -> Result<()> {
    let cells_ok = |n| (1..=SIDE).contains(&n);
    if plane.len() != PLANE || !cells_ok(rows) || !cells_ok(cols) || dropped.len() != rows * cols {
        return Err(Error::Invalid {
            op: "drop_cells",
            msg: format!(
                "a {}-byte plane and {} cells for a {rows}x{cols} grid (at most 32x32) over                  {SIDE}x{SIDE} pixels",
                plane.len(),
                dropped.len()
            ),
        });
    }
    for (y, row) in plane.chunks_exact_mut(SIDE).enumerate() {
        let cell_row = &dropped[(y * rows / SIDE) * cols..][..cols];
        for (x, px) in row.iter_mut().enumerate() {
            if cell_row[x * cols / SIDE] {
                *px = 0;
            }
        }
    }
    Ok(())
}

/// The standard policy's crop: the image padded with `STANDARD_PAD` zeros on every side, then the
/// 32x32 window whose top-left corner is (dy, dx) of the padded image, 0 <= dy, dx <= 8.
/// src: (3, 32, 32) -> dst: (3, 32, 32).
///
/// # Errors
/// [`Error::Invalid`] if an offset exceeds `2 * STANDARD_PAD`.
pub fn pad_crop(dst: &mut Image, src: &Image, dy: usize, dx: usize) -> Result<()> {
    if dy > 2 * STANDARD_PAD || dx > 2 * STANDARD_PAD {
        return Err(Error::Invalid {
            op: "pad_crop",
            msg: format!("offset ({dy}, {dx}) outside 0..={}", 2 * STANDARD_PAD),
        });
    }
    dst.fill(0);
    // Output (y, x) reads source (y + dy - PAD, x + dx - PAD) where that lies inside the image.
    let (y_from, y_to) = (
        STANDARD_PAD.saturating_sub(dy),
        (SIDE + STANDARD_PAD - dy).min(SIDE),
    );
    let (x_from, x_to) = (
        STANDARD_PAD.saturating_sub(dx),
        (SIDE + STANDARD_PAD - dx).min(SIDE),
    );
    for (dst_plane, src_plane) in dst.chunks_exact_mut(PLANE).zip(src.chunks_exact(PLANE)) {
        for y in y_from..y_to {
            let sy = y + dy - STANDARD_PAD;
            let sx = x_from + dx - STANDARD_PAD;
            dst_plane[y * SIDE + x_from..y * SIDE + x_to]
                .copy_from_slice(&src_plane[sy * SIDE + sx..sy * SIDE + sx + (x_to - x_from)]);
        }
    }
    Ok(())
}

/// The three augmenters of the seed's policy, in the order SPEC lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeedOp {
    /// Crop 0..=12 pixels per side, resize back with INTER_AREA ([`crop_resize`]).
    Crop,
    /// Horizontal flip with probability 0.5.
    Flip,
    /// [`coarse_dropout`] with parameters from [`Dropout::draw`].
    Dropout,
}

impl SeedOp {
    pub const ALL: [SeedOp; 3] = [SeedOp::Crop, SeedOp::Flip, SeedOp::Dropout];
}

/// The order the seed's augmenters run in for batch `batch` (its position in the epoch) of
/// `epoch`: one random permutation per batch, as imgaug's `SomeOf(..., random_order=True)` draws
/// one per call. Keyed by (seed, epoch, batch) alone, so it does not depend on which images the
/// batch holds or on where a resumed run started.
pub fn batch_op_order(seed: u64, epoch: u64, batch: u64) -> [SeedOp; 3] {
    let mut order = SeedOp::ALL;
    order.shuffle(&mut keyed_rng(*b"augorder", seed, epoch, batch));
    order
}

/// The seed's policy on one image, in place: n ~ U{0, 1, 2, 3}, then a random n-subset of the
/// three augmenters (each subset of that size equally likely), applied in the batch's `order`.
/// Every choice but the order is drawn from `rng`.
pub fn augment_seed<R: Rng + ?Sized>(img: &mut Image, order: &[SeedOp; 3], rng: &mut R) {
    let n = rng.random_range(0..=SeedOp::ALL.len());
    // imgaug marks the first n of [Crop, Flip, Dropout] active and shuffles the marks.
    let mut active: [bool; 3] = std::array::from_fn(|i| i < n);
    active.shuffle(rng);
    for &op in order {
        if !active[op as usize] {
            continue;
        }
        match op {
            SeedOp::Crop => {
                let crop = Crop {
                    top: rng.random_range(0..=MAX_CROP),
                    bottom: rng.random_range(0..=MAX_CROP),
                    left: rng.random_range(0..=MAX_CROP),
                    right: rng.random_range(0..=MAX_CROP),
                };
                let src = *img;
                crop_resize(img, &src, crop).expect("crops of at most 12 per side leave 8 pixels");
            }
            SeedOp::Flip => {
                if rng.random_bool(0.5) {
                    flip_horizontal(img);
                }
            }
            SeedOp::Dropout => {
                let d = Dropout::draw(rng);
                coarse_dropout(img, &d, rng).expect("p < 0.2 and 4..=7 cells per axis");
            }
        }
    }
}

/// The standard policy on one image, in place: pad 4, random crop, flip with probability 0.5.
pub fn augment_standard<R: Rng + ?Sized>(img: &mut Image, rng: &mut R) {
    let dy = rng.random_range(0..=2 * STANDARD_PAD);
    let dx = rng.random_range(0..=2 * STANDARD_PAD);
    let src = *img;
    pad_crop(img, &src, dy, dx).expect("offsets drawn in range");
    if rng.random_bool(0.5) {
        flip_horizontal(img);
    }
}

/// Where an image is augmented. Every random choice of its augmentation is a function of these
/// numbers: the batch's augmenter order of (seed, epoch, batch), the image's own choices of
/// [`image_rng`]`(seed, epoch, index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageKey {
    /// The run's seed.
    pub seed: u64,
    pub epoch: u64,
    /// Position of the image's batch within the epoch, from 0.
    pub batch: u64,
    /// The image's dataset index.
    pub index: u64,
}

/// Applies `policy` to one image, every choice drawn as `key` says.
pub fn augment_image(img: &mut Image, policy: Augment, key: ImageKey) {
    let order = batch_op_order(key.seed, key.epoch, key.batch);
    augment_ordered(img, policy, &order, key);
}

fn augment_ordered(img: &mut Image, policy: Augment, order: &[SeedOp; 3], key: ImageKey) {
    let mut rng = image_rng(key.seed, key.epoch, key.index);
    match policy {
        Augment::None => {}
        Augment::Seed => augment_seed(img, order, &mut rng),
        Augment::Standard => augment_standard(img, &mut rng),
    }
}

/// Applies `policy` to batch `batch` of `epoch`, in place, in parallel over images; image i is
/// augmented as [`augment_image`] with the key (seed, epoch, batch, `indices[i]`), so the result
/// does not depend on the thread count. images: (N, 3, 32, 32) bytes, indices: (N,).
///
/// # Errors
/// [`Error::Invalid`] if `images` does not hold `indices.len()` images.
pub fn augment_batch(
    images: &mut [u8],
    indices: &[usize],
    policy: Augment,
    seed: u64,
    epoch: u64,
    batch: u64,
) -> Result<()> {
    if images.len() != indices.len() * IMAGE_BYTES {
        return Err(Error::Invalid {
            op: "augment_batch",
            msg: format!(
                "{} image bytes for {} indices, expected {}",
                images.len(),
                indices.len(),
                indices.len() * IMAGE_BYTES
            ),
        });
    }
    if policy == Augment::None {
        return Ok(());
    }
    let order = batch_op_order(seed, epoch, batch);
    images
        .par_chunks_exact_mut(IMAGE_BYTES)
        .zip(indices)
        .for_each(|(img, &index)| {
            let img: &mut Image = img.try_into().expect("chunks are IMAGE_BYTES long");
            let key = ImageKey {
                seed,
                epoch,
                batch,
                index: index as u64,
            };
            augment_ordered(img, policy, &order, key);
        });
    Ok(())
}
