//! A dataset directory loaded into memory: the training and test splits and the class names.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::{
    read_label_names, read_records_into, Format, Records, CIFAR100_COARSE, IMAGE_BYTES,
};
use crate::preprocess::Preprocess;
use crate::{Error, Result};

/// The images and labels of one split, images kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// (N, 3, 32, 32) bytes, CHW planes as in the file.
    images: Vec<u8>,
    /// (N,) fine labels.
    fine: Vec<u32>,
    /// (N,) coarse labels, CIFAR-100 only.
    coarse: Option<Vec<u32>>,
}

impl Split {
    /// A split from images (N, 3, 32, 32) as bytes and labels (N,).
    ///
    /// # Errors
    /// [`Error::Invalid`] if the lengths disagree.
    pub fn new(images: Vec<u8>, fine: Vec<u32>, coarse: Option<Vec<u32>>) -> Result<Split> {
        let n = fine.len();
        let coarse_ok = coarse.as_ref().is_none_or(|c| c.len() == n);
        if images.len() != n * IMAGE_BYTES || !coarse_ok {
            return Err(Error::Invalid {
                op: "Split::new",
                msg: format!(
                    "{} image bytes, {n} fine labels, {:?} coarse labels: expected {} bytes \
                     ({IMAGE_BYTES} per image) and as many labels of each kind",
                    images.len(),
                    coarse.as_ref().map(Vec::len),
                    n * IMAGE_BYTES
                ),
            });
        }
        Ok(Split {
            images,
            fine,
            coarse,
        })
    }

    fn from_records(r: Records) -> Split {
        Split {
            images: r.images,
            fine: r.fine.into_iter().map(u32::from).collect(),
            coarse: r.coarse.map(|c| c.into_iter().map(u32::from).collect()),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.fine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fine.is_empty()
    }

    /// All images: (N, 3, 32, 32) bytes.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// Image `i`: (3, 32, 32) bytes.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing; [`crate::make_batch`] checks its indices first.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// (N,) fine labels.
    pub fn fine(&self) -> &[u32] {
        &self.fine
    }

    /// (N,) coarse labels, CIFAR-100 only.
    pub fn coarse(&self) -> Option<&[u32]> {
        self.coarse.as_deref()
    }

    /// Applies `preprocess` to every image, in place (see [`Preprocess::apply_to_images`]).
    pub fn preprocess(&mut self, preprocess: Preprocess) {
        preprocess
            .apply_to_images(&mut self.images)
            .expect("a split holds whole images");
    }
}

/// A dataset loaded from a directory: both splits, shared cheaply with batch loaders, and the
/// class names.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub format: Format,
    /// The directory the files were read from.
    pub dir: PathBuf,
    pub train: Arc<Split>,
    pub test: Arc<Split>,
    /// One name per fine class (100 or 10).
    pub fine_names: Vec<String>,
    /// One name per coarse class (20), CIFAR-100 only.
    pub coarse_names: Option<Vec<String>>,
}

impl Dataset {
    /// Loads the dataset of `format` from `dir`.
    ///
    /// `dir` may be the directory holding the files (`.../cifar-100-binary`) or its parent, the
    /// directory the archive was unpacked into. Files with fewer records than the official release
    /// are accepted: the counts are in the result (see its `Display`).
    ///
    /// # Errors
    /// [`Error::Missing`] naming the path expected and the download command; the reader errors of
    /// [`read_records_into`] and [`read_label_names`].
    pub fn load(dir: &Path, format: Format) -> Result<Dataset> {
        let dir = Dataset::resolve_dir(dir, format);
        if !dir.is_dir() {
            return Err(format.missing(&dir));
        }
        let read_split = |files: &[&str]| -> Result<Split> {
            let mut records = Records::default();
            for file in files {
                read_records_into(&dir.join(file), format, &mut records)?;
            }
            Ok(Split::from_records(records))
        };
        let train = read_split(format.train_files())?;
        let test = read_split(format.test_files())?;
        let fine_names = read_label_names(
            &dir.join(format.fine_names_file()),
            format,
            format.num_classes(),
        )?;
        let coarse_names = format
            .coarse_names_file()
            .map(|f| read_label_names(&dir.join(f), format, CIFAR100_COARSE))
            .transpose()?;
        Ok(Dataset {
            format,
            dir,
            train: Arc::new(train),
            test: Arc::new(test),
            fine_names,
            coarse_names,
        })
    }

    /// `dir` itself if it holds the first training file of `format`, otherwise
    /// `dir/<format.dir_name()>` if that exists, otherwise `dir` (so errors name what the user gave).
    pub fn resolve_dir(dir: &Path, format: Format) -> PathBuf {
        let nested = dir.join(format.dir_name());
        if !dir.join(format.train_files()[0]).exists() && nested.is_dir() {
            nested
        } else {
            dir.to_path_buf()
        }
    }

    /// Whether `dir` (or `dir/<format.dir_name()>`) holds every file of `format`.
    pub fn is_complete(dir: &Path, format: Format) -> bool {
        let dir = Dataset::resolve_dir(dir, format);
        format.all_files().iter().all(|f| dir.join(f).is_file())
    }

    /// Applies `preprocess` to the training and the test images: once, right after loading,
    /// before any batch is built (the seed sharpened both splits; SPEC "Preprocessing").
    pub fn preprocess(&mut self, preprocess: Preprocess) {
        for split in [&mut self.train, &mut self.test] {
            Arc::make_mut(split).preprocess(preprocess);
        }
    }

    /// Number of fine classes.
    pub fn num_classes(&self) -> usize {
        self.format.num_classes()
    }
}

impl fmt::Display for Dataset {
    /// `CIFAR-100 from data/cifar-100-binary: 50000 training and 10000 test images, 100 classes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} from {}: {} training and {} test images, {} classes",
            self.format.name(),
            self.dir.display(),
            self.train.len(),
            self.test.len(),
            self.num_classes()
        )
    }
}
