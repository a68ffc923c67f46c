//! Per-image training augmentation on `u8` images (3, 32, 32), before normalisation.
//!
//! Every random choice for an image comes from its own RNG, [`image_rng`]`(seed, epoch, index)`,
//! so an image's augmentation is a pure function of those three numbers: it does not depend on the
//! batch it lands in, on the thread count, or on whether the run was resumed.
//!
//! The seed's policy ([`Augment::Seed`], SPEC "Training augmentation"): pick n uniformly in
//! {0, 1, 2, 3}, then n distinct augmenters of crop-and-resize, horizontal flip and coarse dropout,
//! in random order. The crop is resized back to 32x32 with bilinear interpolation (pixel centres
//! aligned, as OpenCV's `INTER_LINEAR`), so a crop of 0 on every side is exactly the identity.

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
    /// The seed's policy: a random subset, in random order, of crop-and-resize (0..=12 pixels per
    /// side), horizontal flip (p = 0.5) and coarse dropout.
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

/// Crops `crop` pixels off the sides of `src` and resizes the rest back to 32x32, bilinear.
/// src: (3, 32, 32) -> dst: (3, 32, 32).
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
    let rows = taps(crop.top, SIDE - crop.top - crop.bottom);
    let cols = taps(crop.left, SIDE - crop.left - crop.right);
    for (dst_plane, src_plane) in dst.chunks_exact_mut(PLANE).zip(src.chunks_exact(PLANE)) {
        for (dst_row, &(y0, y1, fy)) in dst_plane.chunks_exact_mut(SIDE).zip(&rows) {
            let (r0, r1) = (&src_plane[y0 * SIDE..], &src_plane[y1 * SIDE..]);
            for (out, &(x0, x1, fx)) in dst_row.iter_mut().zip(&cols) {
                let top = f32::from(r0[x0]) * (1.0 - fx) + f32::from(r0[x1]) * fx;
                let bottom = f32::from(r1[x0]) * (1.0 - fx) + f32::from(r1[x1]) * fx;
                *out = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    Ok(())
}

/// For each of the 32 output positions along one axis: the two source positions and the weight
/// of the second, sampling `len` source pixels starting at `start` with centres aligned.
fn taps(start: usize, len: usize) -> [(usize, usize, f32); SIDE] {
    let scale = len as f32 / SIDE as f32;
    std::array::from_fn(|i| {
        let s = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (len - 1) as f32);
        let i0 = s.floor() as usize;
        let i1 = (i0 + 1).min(len - 1);
        (start + i0, start + i1, s - i0 as f32)
    })
}

/// Coarse dropout: a `cells` x `cells` grid over the image, each cell dropped with probability
/// `p`, the mask upscaled (nearest) to 32x32; dropped pixels become 0. With [`MaskMode::Shared`]
/// one mask serves all channels, with [`MaskMode::PerChannel`] each channel draws its own.
/// img: (3, 32, 32), in place.
///
/// # Errors
/// [`Error::Invalid`] unless 0 <= p <= 1 and 1 <= cells <= 32.
pub fn coarse_dropout<R: Rng + ?Sized>(
    img: &mut Image,
    p: f64,
    cells: usize,
    mode: MaskMode,
    rng: &mut R,
) -> Result<()> {
    if !(0.0..=1.0).contains(&p) || !(1..=SIDE).contains(&cells) {
        return Err(Error::Invalid {
            op: "coarse_dropout",
            msg: format!("p = {p} must lie in [0, 1] and cells = {cells} in 1..=32"),
        });
    }
    let mut mask = [false; SIDE * SIDE];
    for (c, plane) in img.chunks_exact_mut(PLANE).enumerate() {
        if c == 0 || mode == MaskMode::PerChannel {
            for m in &mut mask[..cells * cells] {
                *m = rng.random_bool(p);
            }
        }
        for (y, row) in plane.chunks_exact_mut(SIDE).enumerate() {
            let cell_row = &mask[(y * cells / SIDE) * cells..][..cells];
            for (x, px) in row.iter_mut().enumerate() {
                if cell_row[x * cells / SIDE] {
                    *px = 0;
                }
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

/// The seed's policy on one image, in place, drawing every choice from `rng`.
pub fn augment_seed<R: Rng + ?Sized>(img: &mut Image, rng: &mut R) {
    let n = rng.random_range(0..=3usize);
    let mut ops = [0u8, 1, 2];
    ops.shuffle(rng);
    for &op in &ops[..n] {
        match op {
            0 => {
                let crop = Crop {
                    top: rng.random_range(0..=MAX_CROP),
                    bottom: rng.random_range(0..=MAX_CROP),
                    left: rng.random_range(0..=MAX_CROP),
                    right: rng.random_range(0..=MAX_CROP),
                };
                let src = *img;
                crop_resize(img, &src, crop).expect("crops of at most 12 per side leave 8 pixels");
            }
            1 => {
                if rng.random_bool(0.5) {
                    flip_horizontal(img);
                }
            }
            _ => {
                let p = rng.random_range(0.0..0.2);
                let size = rng.random_range(0.02..0.25f64);
                let cells = ((size * SIDE as f64).round() as usize).clamp(1, 8);
                let mode = if rng.random_bool(0.5) {
                    MaskMode::PerChannel
                } else {
                    MaskMode::Shared
                };
                coarse_dropout(img, p, cells, mode, rng).expect("p < 0.2 and 1 <= cells <= 8");
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

/// Applies `policy` to one image with its own RNG `image_rng(seed, epoch, index)`.
pub fn augment_image(img: &mut Image, policy: Augment, seed: u64, epoch: u64, index: u64) {
    match policy {
        Augment::None => {}
        Augment::Seed => augment_seed(img, &mut image_rng(seed, epoch, index)),
        Augment::Standard => augment_standard(img, &mut image_rng(seed, epoch, index)),
    }
}

/// Applies `policy` to a batch of images in place, in parallel over images; image i uses the RNG
/// of dataset index `indices[i]`, so the result does not depend on the thread count.
/// images: (N, 3, 32, 32) bytes, indices: (N,).
///
/// # Errors
/// [`Error::Invalid`] if `images` does not hold `indices.len()` images.
pub fn augment_batch(
    images: &mut [u8],
    indices: &[usize],
    policy: Augment,
    seed: u64,
    epoch: u64,
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
    images
        .par_chunks_exact_mut(IMAGE_BYTES)
        .zip(indices)
        .for_each(|(img, &index)| {
            let img: &mut Image = img.try_into().expect("chunks are IMAGE_BYTES long");
            augment_image(img, policy, seed, epoch, index as u64);
        });
    Ok(())
}
