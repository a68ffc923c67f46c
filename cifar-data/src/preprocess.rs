//! Preprocessing applied once to every training and test image before anything else, and to the
//! images `predict` classifies: the seed's sharpening (SPEC "Preprocessing").
//!
//! The seed ran OpenCV `filter2D(img, -1, K)` with the 5x5 unsharp mask
//! K = -1/256 [[1,4,6,4,1],[4,16,24,16,4],[6,24,-476,24,6],[4,16,24,16,4],[1,4,6,4,1]],
//! that is y = 2x - G(x) with G the binomial blur [1,4,6,4,1]^T [1,4,6,4,1] / 256, per channel,
//! border BORDER_REFLECT_101 (`dcb|abcd|cba`).
//!
//! OpenCV accumulates the 25 products in `f32` and converts with `saturate_cast<uchar>`, which
//! rounds half to even. Every coefficient is a multiple of 1/256 and every partial sum is an
//! integer below 2^24 times 1/256, so that float sum is exact whatever its order (and with or
//! without FMA): the result is exactly round_half_even(n / 256) with the integer
//! n = 512 x - sum(b * x) (b the integer binomial weights, sum 256), clamped to 0..=255. This
//! module computes n in integers, separably. `tests/opencv.rs` checks it against real OpenCV.

use rayon::prelude::*;

use crate::augment::Image;
use crate::format::{IMAGE_BYTES, PLANE, SIDE};
use crate::{Error, Result};

/// What is done to every image once, before augmentation and normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preprocess {
    /// The images as the files store them.
    None,
    /// The seed's unsharp mask ([`sharpen_plane`]).
    Sharpen,
}

impl Preprocess {
    /// `none` or `sharpen`, as configuration files and checkpoint metadata spell it.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::None => "none",
            Preprocess::Sharpen => "sharpen",
        }
    }

    /// The inverse of [`Preprocess::name`].
    pub fn from_name(name: &str) -> Option<Preprocess> {
        [Preprocess::None, Preprocess::Sharpen]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Applies this preprocessing to every image of (N, 3, 32, 32) bytes, in place, in parallel
    /// over images (each image's result depends on that image alone).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `images` is not a whole number of images.
    pub fn apply_to_images(self, images: &mut [u8]) -> Result<()> {
        if !images.len().is_multiple_of(IMAGE_BYTES) {
            return Err(Error::Invalid {
                op: "Preprocess::apply_to_images",
                msg: format!(
                    "{} bytes is not a whole number of {IMAGE_BYTES}-byte images",
                    images.len()
                ),
            });
        }
        if self == Preprocess::Sharpen {
            images.par_chunks_exact_mut(IMAGE_BYTES).for_each(|img| {
                let img: &mut Image = img.try_into().expect("chunks are IMAGE_BYTES long");
                *img = sharpen_image(img);
            });
        }
        Ok(())
    }

    /// Applies this preprocessing to one image (3, 32, 32) in place.
    pub fn apply_to_image(self, img: &mut Image) {
        if self == Preprocess::Sharpen {
            *img = sharpen_image(img);
        }
    }
}

/// The integer binomial weights of the blur G, [1, 4, 6, 4, 1] along each axis (sum 16).
const BINOMIAL: [i32; 5] = [1, 4, 6, 4, 1];

/// Sharpens one 32x32 image, each of its three planes by [`sharpen_plane`].
/// img: (3, 32, 32) -> (3, 32, 32).
pub fn sharpen_image(img: &Image) -> Image {
    let mut out = [0u8; IMAGE_BYTES];
    for (dst, src) in out.chunks_exact_mut(PLANE).zip(img.chunks_exact(PLANE)) {
        sharpen_plane(dst, src, SIDE, SIDE).expect("a 32x32 plane has PLANE bytes");
    }
    out
}

/// OpenCV `filter2D(src, -1, K)` of one channel with the seed's unsharp mask K (module doc):
/// dst = saturate(round_half_even(2 src - G(src))), borders reflected as BORDER_REFLECT_101.
/// Any size works, including planes smaller than the kernel (the border reflects repeatedly, as
/// OpenCV's `borderInterpolate` does). src, dst: (height, width) row-major.
///
/// # Errors
/// [`Error::Invalid`] if a side is 0 or a buffer does not hold height x width bytes.
pub fn sharpen_plane(dst: &mut [u8], src: &[u8], height: usize, width: usize) -> Result<()> {
    let area = height.checked_mul(width).filter(|&a| a > 0);
    if area.is_none() || Some(src.len()) != area || Some(dst.len()) != area {
        return Err(Error::Invalid {
            op: "sharpen_plane",
            msg: format!(
                "a {height}x{width} plane needs height x width >= 1 bytes in and out, got {} \
                 and {}",
                src.len(),
                dst.len()
            ),
        });
    }
    let rows: Vec<[usize; 5]> = (0..height).map(|y| window(y, height)).collect();
    let cols: Vec<[usize; 5]> = (0..width).map(|x| window(x, width)).collect();
    // Vertical pass: blur16[y][x] = sum_i b_i src[rows[y][i]][x], at most 16 * 255.
    let mut blur16 = vec![0i32; height * width];
    for (out_row, taps) in blur16.chunks_exact_mut(width).zip(&rows) {
        for (&b, &sy) in BINOMIAL.iter().zip(taps) {
            let src_row = &src[sy * width..(sy + 1) * width];
            for (o, &v) in out_row.iter_mut().zip(src_row) {
                *o += b * i32::from(v);
            }
        }
    }
    // Horizontal pass and the mask: n = 512 x - sum_j b_j blur16[y][cols[x][j]].
    for ((dst_row, src_row), blur_row) in dst
        .chunks_exact_mut(width)
        .zip(src.chunks_exact(width))
        .zip(blur16.chunks_exact(width))
    {
        for ((d, &x), taps) in dst_row.iter_mut().zip(src_row).zip(&cols) {
            let blur256: i32 = BINOMIAL
                .iter()
                .zip(taps)
                .map(|(&b, &t)| b * blur_row[t])
                .sum();
            *d = div256_round_half_even_u8(512 * i32::from(x) - blur256);
        }
    }
    Ok(())
}

/// The five source positions read for output position `i` of an axis of `len` pixels:
/// i - 2 ..= i + 2, reflected into range as BORDER_REFLECT_101.
fn window(i: usize, len: usize) -> [usize; 5] {
    std::array::from_fn(|k| reflect_101(i as isize + k as isize - 2, len))
}

/// OpenCV's `borderInterpolate(p, len, BORDER_REFLECT_101)`: ...dcb|abcd|cba..., repeated for
/// positions more than one length outside; a single pixel reflects onto itself.
fn reflect_101(mut p: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * (len - 1) - p };
    }
    p as usize
}

/// round_half_even(n / 256) saturated to 0..=255: `saturate_cast<uchar>` of the exact quotient.
fn div256_round_half_even_u8(n: i32) -> u8 {
    let (q, r) = (n >> 8, n & 0xff);
    let q = if r > 128 || (r == 128 && q & 1 == 1) {
        q + 1
    } else {
        q
    };
    q.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_101_matches_opencv_border_interpolate() {
        // OpenCV: len 5, positions -3..8 -> 3 2 1 | 0 1 2 3 4 | 3 2 1.
        let got: Vec<usize> = (-3..8).map(|p| reflect_101(p, 5)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        // Two pixels: ...0 1 0 | 0 1 | 0 1 0...; one pixel: always 0.
        let got: Vec<usize> = (-2..4).map(|p| reflect_101(p, 2)).collect();
        assert_eq!(got, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(reflect_101(-2, 1), 0);
    }

    #[test]
    fn rounding_is_half_to_even_and_saturates() {
        assert_eq!(div256_round_half_even_u8(128), 0, "0.5 -> 0");
        assert_eq!(div256_round_half_even_u8(384), 2, "1.5 -> 2");
        assert_eq!(div256_round_half_even_u8(640), 2, "2.5 -> 2");
        assert_eq!(div256_round_half_even_u8(641), 3);
        assert_eq!(div256_round_half_even_u8(-1), 0);
        assert_eq!(div256_round_half_even_u8(-129), 0, "-0.504 -> -1 -> 0");
        assert_eq!(div256_round_half_even_u8(255 * 256 + 127), 255);
        assert_eq!(div256_round_half_even_u8(256 * 256), 255);
    }
}
