//! The bodies of the cargo-fuzz targets in `fuzz/` that read the trainer's own files
//! (checkpoints, `config.toml`, the images `predict` classifies), kept here so that the stable
//! regression test (`tests/fuzz_regressions.rs`) feeds saved inputs through exactly the code the
//! fuzzer ran. The pattern is `cifar_data::fuzz_harness`'s; see `fuzz/README.md`.
//!
//! Each function takes arbitrary bytes, writes them to a temporary file (every loader takes a
//! path), loads it as the binary does, and panics (a finding) if the loader panics or breaks an
//! invariant: an `Ok` that does not hold what the format promises, an `Err` of a kind the
//! loader does not document, a message that does not name the file. Not part of the crate's API.

use std::fs;
use std::path::Path;

use nn_layers::ForwardCtx;
use tensor_core::Tensor;

use crate::checkpoint;
use crate::commands::predict::{network_input, read_image_within};
use crate::config::TrainConfig;
use crate::model::{IMAGE_CHANNELS, IMAGE_SIDE};
use crate::state;
use crate::Error;
use cifar_data::Preprocess;

/// The name the checkpoint targets' input is saved under, so messages can be checked for it.
pub const CHECKPOINT_NAME: &str = "fuzz-input.safetensors";
/// The name the `config_toml` target's input is saved under.
pub const CONFIG_NAME: &str = "fuzz-config.toml";
/// The name the `predict_image` target's input is saved under.
pub const IMAGE_NAME: &str = "fuzz-input.img";
/// Decoded-size budget of the `predict_image` target: small, so an image that decodes to
/// millions of pixels costs the fuzzer little (the binary allows
/// [`crate::commands::predict::MAX_IMAGE_BYTES`]).
pub const IMAGE_BUDGET: u64 = 4 << 20;

/// Runs `check` on `data` saved as `name` in a fresh temporary directory.
fn with_file(data: &[u8], name: &str, check: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    fs::write(&path, data).expect("writing the input");
    check(&path);
}

/// A checkpoint file as it is on disk.
pub fn checkpoint(data: &[u8]) {
    with_file(data, CHECKPOINT_NAME, check_checkpoint);
}

/// A checkpoint given as its JSON header and its tensor bytes, separated by the first zero byte
/// (which valid JSON cannot hold); the file written is the header's length (8 bytes, little
/// endian), the header, the tensor bytes. Mutations that change the header's length keep the
/// file's framing right, so they reach the shapes, dtypes, offsets, metadata and the config
/// inside it, which [`checkpoint`] mostly meets through a wrong length prefix.
pub fn checkpoint_header(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (header, tensors) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(tensors);
    checkpoint(&file);
}

/// The checkpoint at `path` through the file format ([`checkpoint::load`]), then as `eval` and
/// `predict` load it ([`state::load_model`]: settings, class names, position, the network
/// built and its weights loaded), then one image through the network.
fn check_checkpoint(path: &Path) {
    match checkpoint::load(path) {
        Ok(c) => {
            for t in &c.tensors {
                assert_eq!(
                    t.data.len(),
                    t.shape.iter().product::<usize>(),
                    "{}",
                    t.name
                );
            }
            assert!(c.tensors.windows(2).all(|w| w[0].name < w[1].name));
        }
        Err(e) => {
            assert!(matches!(e, Error::Format { .. }), "{e:?}");
            assert!(e.to_string().contains(CHECKPOINT_NAME), "{e}");
            return;
        }
    }
    match state::load_model(path) {
        Ok((mut model, loaded)) => {
            loaded.config.validate().expect("a loaded config is valid");
            let classes = loaded.class_names.len();
            assert_eq!(model.spec.classes, classes);
            let x = Tensor::zeros([1, IMAGE_CHANNELS, IMAGE_SIDE, IMAGE_SIDE]);
            let (logits, _) = model
                .forward(x, ForwardCtx::EVAL)
                .expect("a loaded network runs");
            assert_eq!(logits.dims(), &[1, classes]);
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Format { .. } | Error::Mismatch { .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains(CHECKPOINT_NAME), "{e}");
        }
    }
}

/// A `config.toml` file. A config that loads is valid, and saving it and loading it again
/// gives the same settings.
pub fn config_toml(data: &[u8]) {
    with_file(data, CONFIG_NAME, |path| match TrainConfig::load(path) {
        Ok(config) => {
            config.validate().expect("a loaded config is valid");
            let again = path.with_file_name("again.toml");
            config.save(&again).expect("a loaded config saves");
            assert_eq!(TrainConfig::load(&again).expect("and loads again"), config);
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Format { .. } | Error::Io { .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains(CONFIG_NAME), "{e}");
        }
    });
}

/// An image file as `predict` reads it (sniffed as PNG or JPEG, decoded within
/// [`IMAGE_BUDGET`], resized to 32x32, sharpened, normalised): 3 x 32 x 32 values in [-1, 1], or an error
/// naming the file.
pub fn predict_image(data: &[u8]) {
    with_file(data, IMAGE_NAME, |path| {
        match read_image_within(path, IMAGE_BUDGET) {
            Ok(img) => {
                let x = network_input(&img, Preprocess::Sharpen);
                assert_eq!(x.len(), IMAGE_CHANNELS * IMAGE_SIDE * IMAGE_SIDE);
                assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)), "{x:?}");
            }
            Err(e) => assert!(format!("{e:#}").contains(IMAGE_NAME), "{e:#}"),
        }
    });
}
