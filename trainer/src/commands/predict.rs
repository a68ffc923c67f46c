//! `trainer predict`: classifies PNG or JPEG files with a checkpoint and prints each file's top-k
//! class names with their probabilities.
//!
//! Each image is decoded, converted to 8-bit RGB and resized to 32x32 ignoring its aspect ratio,
//! with the bilinear (`Triangle`) filter of the `image` crate. That filter's support widens with
//! the reduction factor, so a large photo is averaged over every source pixel instead of sampled
//! (no aliasing), and it never overshoots as Lanczos or Catmull-Rom can. The bytes are then laid
//! out as (3, 32, 32) planes, preprocessed as the checkpoint's run preprocessed its images (the
//! seed's sharpening, or none: read from the checkpoint, never from a flag) and normalised with
//! [`cifar_data::normalize`], exactly as the training and test images are.

use std::path::Path;

use anyhow::{bail, Context};
use cifar_data::augment::Image;
use cifar_data::Preprocess;
use image::imageops::FilterType;
use image::{ImageReader, Limits};
use nn_layers::{into_device, ForwardCtx, SoftmaxCrossEntropy};
use tensor_core::Tensor;

use crate::cli::PredictArgs;
use crate::evaluate::top_k;
use crate::model::{IMAGE_CHANNELS, IMAGE_SIDE};
use crate::state;

/// Images per forward pass.
const BATCH: usize = 64;

pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    let device = super::setup_runtime(&args.runtime)?;
    // Every file is read before the model, so a bad one fails fast.
    let images = args
        .images
        .iter()
        .map(|p| read_image(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ckpt = &args.checkpoint;
    let (mut model, loaded) = state::load_model(ckpt)
        .with_context(|| format!("--checkpoint {}: cannot load the model", ckpt.display()))?;
    super::set_precision(&mut model, args.runtime.precision, &loaded, device)?;
    model.to_device(device)?;
    let preprocess = Preprocess::from(loaded.config.data.preprocess);
    let images: Vec<Vec<f32>> = images
        .iter()
        .map(|img| network_input(img, preprocess))
        .collect();
    let names = &loaded.class_names;
    let classes = names.len();
    let k = args.top_k.min(classes);

    for (chunk, paths) in images.chunks(BATCH).zip(args.images.chunks(BATCH)) {
        let n = chunk.len();
        let x = Tensor::from_vec([n, IMAGE_CHANNELS, IMAGE_SIDE, IMAGE_SIDE], chunk.concat())?;
        let probs = probabilities(&mut model, x)?;
        for (path, row) in paths.iter().zip(probs.chunks_exact(classes)) {
            println!("{}", path.display());
            for c in top_k(row, k) {
                println!("  {:>6.2}%  {}", 100.0 * row[c], names[c]);
            }
        }
    }
    Ok(())
}

/// x: (N, 3, 32, 32) -> probabilities: (N, classes) row-major, the model in evaluation mode.
fn probabilities(model: &mut crate::model::ResNet, x: Tensor) -> anyhow::Result<Vec<f32>> {
    let n = x.dims()[0];
    let x = into_device(x, model.device())?;
    let (logits, _) = model.forward(x, ForwardCtx::EVAL)?;
    // The loss's forward is the one softmax of the code base; the labels only feed the loss
    // value, which is discarded, so any valid class (0) will do.
    let (_, cache) = SoftmaxCrossEntropy.forward(&logits, &vec![0; n])?;
    Ok(cache.probs().try_to_vec()?)
}

/// The most memory a decoded input image may take (the `image` crate's decoders check it from
/// the header, before allocating): 128 MiB, e.g. a 44-megapixel 8-bit RGB photo; its 8-bit RGB
/// copy takes at most three times that again (from grayscale). A file whose header claims more
/// (100,000 x 100,000 pixels, say) is refused at once.
pub const MAX_IMAGE_BYTES: u64 = 128 << 20;

/// Reads a PNG or JPEG file (the format is sniffed from the bytes, not the extension) as a CIFAR
/// image: resized to 32x32, (3, 32, 32) bytes.
///
/// # Errors
/// A file that cannot be read or decoded, or decodes to more than [`MAX_IMAGE_BYTES`], named
/// in the message.
pub fn read_image(path: &Path) -> anyhow::Result<Image> {
    read_image_within(path, MAX_IMAGE_BYTES)
}

/// [`read_image`] with a decoded size of at most `max_bytes`.
pub fn read_image_within(path: &Path, max_bytes: u64) -> anyhow::Result<Image> {
    let what = || format!("{}: not a readable PNG or JPEG image", path.display());
    let mut reader = ImageReader::open(path)
        .with_context(what)?
        .with_guessed_format()
        .with_context(what)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_bytes);
    reader.limits(limits);
    let img = reader.decode().with_context(what)?;
    if img.width() == 0 || img.height() == 0 {
        bail!("{}: the image is empty", path.display());
    }
    let side = IMAGE_SIDE as u32;
    let rgb = image::imageops::resize(&img.to_rgb8(), side, side, FilterType::Triangle);
    Ok(to_planes(rgb.as_raw()))
}

/// The network's input for `img`: preprocessed with `preprocess`, then normalised.
/// img: (3, 32, 32) bytes -> (3, 32, 32) values in [-1, 1].
pub fn network_input(img: &Image, preprocess: Preprocess) -> Vec<f32> {
    let mut img = *img;
    preprocess.apply_to_image(&mut img);
    img.iter().map(|&v| cifar_data::normalize(v)).collect()
}

/// Interleaved RGB bytes (32, 32, 3) -> planes (3, 32, 32).
fn to_planes(rgb: &[u8]) -> Image {
    let pixels = IMAGE_SIDE * IMAGE_SIDE;
    let mut out = [0u8; IMAGE_CHANNELS * IMAGE_SIDE * IMAGE_SIDE];
    for (i, px) in rgb.chunks_exact(IMAGE_CHANNELS).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * pixels + i] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_are_red_then_green_then_blue() {
        let pixels = IMAGE_SIDE * IMAGE_SIDE;
        let mut rgb = vec![0u8; pixels * 3];
        // Pixel 1 is pure red, pixel 2 pure blue.
        rgb[3] = 255;
        rgb[8] = 255;
        let x = network_input(&to_planes(&rgb), Preprocess::None);
        assert_eq!(x[1], 1.0, "red plane, pixel 1");
        assert_eq!(x[pixels + 1], -1.0, "green plane, pixel 1");
        assert_eq!(x[2 * pixels + 2], 1.0, "blue plane, pixel 2");
        assert_eq!(x[2], -1.0, "red plane, pixel 2");
    }
}
