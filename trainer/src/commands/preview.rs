//! `trainer preview`: what the network sees. The first `--count` images of a split, preprocessed
//! (`--sharpen`) and augmented (`--augment`) exactly as training does it, before normalisation:
//! each image augmented with the keys training batch 0 of `--epoch` would use for it under
//! `--seed` (the batch's augmenter order, the image's own draws keyed by its index).
//!
//! It writes `PREFIX.png`, a grid of the images titled with their class names and split indices,
//! and `PREFIX.bin`, the same images with their labels as records of the dataset's binary layout
//! (CIFAR-100's for CIFAR-100 and the synthetic dataset, CIFAR-10's for CIFAR-10), which
//! `cifar_data::format::read_records` reads back: a script can check the augmentation there.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cifar_data::augment::augment_batch;
use cifar_data::format::{write_records, IMAGE_BYTES};
use cifar_data::{Augment, Records, Split};

use crate::cli::{PreviewArgs, SplitArg};
use crate::config::{DataRecipe, OrderKind, PreprocessKind, Switch};
use crate::data;
use crate::grid::{save_grid, Caption, GridImage, GridLayout};

/// The grid's layout: eight images a row, each pixel a 4x4 square.
pub const PREVIEW_LAYOUT: GridLayout = GridLayout {
    columns: 8,
    scale: 4,
};

pub fn run(args: &PreviewArgs) -> anyhow::Result<()> {
    let preprocess = match args.sharpen {
        Switch::On => PreprocessKind::Sharpen,
        Switch::Off => PreprocessKind::None,
    };
    let recipe = DataRecipe {
        preprocess,
        order: OrderKind::Fixed,
        augment: args.augment,
    };
    let dataset = data::load(&args.data.config(recipe))?;
    let (split, name) = match args.split {
        SplitArg::Train => (&dataset.train, "training"),
        SplitArg::Test => (&dataset.test, "test"),
    };
    if args.count > split.len() {
        bail!(
            "--count {} is more than the {} images of the {name} split",
            args.count,
            split.len()
        );
    }
    let records = preview(
        split,
        args.count,
        args.augment.into(),
        args.seed,
        args.epoch,
    )?;
    let (png, bin) = (
        with_suffix(&args.out, ".png"),
        with_suffix(&args.out, ".bin"),
    );
    if let Some(dir) = png.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out: creating {}", dir.display()))?;
    }
    write_records(&bin, dataset.format, &records)?;
    let images: Vec<GridImage> = records
        .images
        .chunks_exact(IMAGE_BYTES)
        .zip(&records.fine)
        .enumerate()
        .map(|(index, (chw, &label))| GridImage {
            chw,
            caption: Caption::Label {
                class: &dataset.fine_names[usize::from(label)],
                index,
            },
        })
        .collect();
    save_grid(&png, &images, PREVIEW_LAYOUT)?;
    println!(
        "{} {name} images ({}, augment {:?}, seed {}, epoch {}): {} and {}",
        args.count,
        cifar_data::Preprocess::from(preprocess).name(),
        args.augment,
        args.seed,
        args.epoch,
        png.display(),
        bin.display()
    );
    Ok(())
}

/// The first `count` images of `split` with their labels, augmented with `policy` as batch 0 of
/// `epoch` under `seed` augments them. images: (count, 3, 32, 32) bytes.
///
/// # Errors
/// `count` larger than the split, or a label that does not fit a byte.
pub fn preview(
    split: &Split,
    count: usize,
    policy: Augment,
    seed: u64,
    epoch: u64,
) -> anyhow::Result<Records> {
    if count > split.len() {
        bail!("{count} images of a split of {}", split.len());
    }
    let mut images = split.images()[..count * IMAGE_BYTES].to_vec();
    let indices: Vec<usize> = (0..count).collect();
    augment_batch(&mut images, &indices, policy, seed, epoch, 0)?;
    let bytes = |labels: &[u32]| -> anyhow::Result<Vec<u8>> {
        let out: std::result::Result<Vec<u8>, _> =
            labels[..count].iter().map(|&l| u8::try_from(l)).collect();
        out.context("a label above 255")
    };
    Ok(Records {
        images,
        fine: bytes(split.fine())?,
        coarse: split.coarse().map(bytes).transpose()?,
    })
}

/// `prefix` with `suffix` appended to its last component (`runs/a.v1` -> `runs/a.v1.png`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(prefix.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_take_the_prefix_as_given() {
        assert_eq!(
            with_suffix(Path::new("runs/a.v1"), ".png"),
            PathBuf::from("runs/a.v1.png")
        );
        assert_eq!(with_suffix(Path::new("p"), ".bin"), PathBuf::from("p.bin"));
    }
}
