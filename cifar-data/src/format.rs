//! The two binary releases: file names, record layout, checksums, and the record reader and writer.
//!
//! A record is the label byte(s) followed by 3072 pixel bytes: 1024 red, 1024 green, 1024 blue,
//! each plane 32 rows of 32 pixels, row-major. That is already CHW, so an image is kept exactly as
//! the file stores it. Every field is a single byte, so there is no byte order to care about and the
//! reader is a plain slice walk.

use std::fs;
use std::path::Path;

use crate::{Error, Result};

/// Side of an image in pixels.
pub const SIDE: usize = 32;
/// Pixels in one colour plane: 32 x 32.
pub const PLANE: usize = SIDE * SIDE;
/// Bytes of one image: 3 planes (C, H, W) = (3, 32, 32).
pub const IMAGE_BYTES: usize = 3 * PLANE;
/// Fine classes of CIFAR-100.
pub const CIFAR100_FINE: usize = 100;
/// Coarse classes (superclasses) of CIFAR-100.
pub const CIFAR100_COARSE: usize = 20;
/// Classes of CIFAR-10.
pub const CIFAR10_CLASSES: usize = 10;
/// The dataset's home page, where both archives are published.
pub const HOME_PAGE: &str = "https://www.cs.toronto.edu/~kriz/cifar.html";
/// The directory both archives are served from.
pub const BASE_URL: &str = "https://www.cs.toronto.edu/~kriz/";

/// Which binary release a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `train.bin`, `test.bin`: coarse label, fine label, pixels (3074 bytes a record).
    Cifar100,
    /// `data_batch_1..5.bin`, `test_batch.bin`: label, pixels (3073 bytes a record).
    Cifar10,
}

impl Format {
    /// Bytes of one record: the label bytes plus [`IMAGE_BYTES`].
    pub fn record_size(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// Label bytes at the start of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            Format::Cifar100 => 2,
            Format::Cifar10 => 1,
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            Format::Cifar100 => CIFAR100_FINE,
            Format::Cifar10 => CIFAR10_CLASSES,
        }
    }

    /// The directory the archive unpacks to.
    pub fn dir_name(self) -> &'static str {
        match self {
            Format::Cifar100 => "cifar-100-binary",
            Format::Cifar10 => "cifar-10-batches-bin",
        }
    }

    /// The archive's file name on the home page.
    pub fn archive_name(self) -> &'static str {
        match self {
            Format::Cifar100 => "cifar-100-binary.tar.gz",
            Format::Cifar10 => "cifar-10-binary.tar.gz",
        }
    }

    /// The published MD5 of the archive, lowercase hex.
    pub fn md5(self) -> &'static str {
        match self {
            Format::Cifar100 => "03b5dce01913d631647c71ecec9e9cb8",
            Format::Cifar10 => "c32a1d4ab5d03f1284b67883e8d87530",
        }
    }

    /// The value of the trainer's `--dataset` flag for this format, used in error messages.
    pub fn cli_name(self) -> &'static str {
        match self {
            Format::Cifar100 => "cifar100",
            Format::Cifar10 => "cifar10",
        }
    }

    /// Human name: `CIFAR-100` or `CIFAR-10`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Cifar100 => "CIFAR-100",
            Format::Cifar10 => "CIFAR-10",
        }
    }

    /// The training files, read and concatenated in this order.
    pub fn train_files(self) -> &'static [&'static str] {
        match self {
            Format::Cifar100 => &["train.bin"],
            Format::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
        }
    }

    /// The test files.
    pub fn test_files(self) -> &'static [&'static str] {
        match self {
            Format::Cifar100 => &["test.bin"],
            Format::Cifar10 => &["test_batch.bin"],
        }
    }

    /// The fine (or only) label-name file.
    pub fn fine_names_file(self) -> &'static str {
        match self {
            Format::Cifar100 => "fine_label_names.txt",
            Format::Cifar10 => "batches.meta.txt",
        }
    }

    /// The coarse label-name file, CIFAR-100 only.
    pub fn coarse_names_file(self) -> Option<&'static str> {
        match self {
            Format::Cifar100 => Some("coarse_label_names.txt"),
            Format::Cifar10 => None,
        }
    }

    /// Every file a complete directory of this format holds.
    pub fn all_files(self) -> Vec<&'static str> {
        let mut files: Vec<&'static str> = self.train_files().to_vec();
        files.extend_from_slice(self.test_files());
        files.push(self.fine_names_file());
        files.extend(self.coarse_names_file());
        files
    }

    /// The error for a path of this dataset that does not exist.
    pub(crate) fn missing(self, path: &Path) -> Error {
        Error::Missing {
            path: path.to_path_buf(),
            dataset: self.cli_name(),
            archive: self.archive_name(),
        }
    }
}

/// Images and labels read from one or more record files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// (N, 3, 32, 32) as bytes, CHW planes exactly as in the file.
    pub images: Vec<u8>,
    /// (N,) fine labels (the only labels for CIFAR-10).
    pub fine: Vec<u8>,
    /// (N,) coarse labels, CIFAR-100 only.
    pub coarse: Option<Vec<u8>>,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.fine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fine.is_empty()
    }
}

/// Reads one record file of `format`, appending its records to `out`.
///
/// # Errors
/// [`Error::Missing`] if the file does not exist, [`Error::Io`] if it cannot be read, and the
/// errors of [`parse_records_into`].
pub fn read_records_into(path: &Path, format: Format, out: &mut Records) -> Result<()> {
    if !path.exists() {
        return Err(format.missing(path));
    }
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_records_into(&bytes, path, format, out)
}

/// Parses the bytes of a record file of `format`, appending its records to `out`; `path` only
/// names the file in errors. On an error `out` is left as it was.
///
/// # Errors
/// [`Error::EmptyFile`], [`Error::RecordSize`] if the size is not a whole number of records,
/// [`Error::Label`] naming the first record with an out-of-range label.
pub fn parse_records_into(
    bytes: &[u8],
    path: &Path,
    format: Format,
    out: &mut Records,
) -> Result<()> {
    let record_size = format.record_size();
    if bytes.is_empty() {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
            record_size,
        });
    }
    if !bytes.len().is_multiple_of(record_size) {
        return Err(Error::RecordSize {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record_size,
        });
    }
    // (kind, classes) of each label byte, in record order.
    let labels: &[(&str, usize)] = match format {
        Format::Cifar100 => &[("coarse", CIFAR100_COARSE), ("fine", CIFAR100_FINE)],
        Format::Cifar10 => &[("class", CIFAR10_CLASSES)],
    };
    for (index, record) in bytes.chunks_exact(record_size).enumerate() {
        for (&value, &(kind, classes)) in record.iter().zip(labels) {
            if usize::from(value) >= classes {
                return Err(Error::Label {
                    path: path.to_path_buf(),
                    index,
                    kind,
                    value,
                    classes,
                });
            }
        }
    }
    let n = bytes.len() / record_size;
    out.images.reserve(n * IMAGE_BYTES);
    out.fine.reserve(n);
    for record in bytes.chunks_exact(record_size) {
        let (labels, pixels) = record.split_at(format.label_bytes());
        match format {
            Format::Cifar100 => {
                out.coarse.get_or_insert_with(Vec::new).push(labels[0]);
                out.fine.push(labels[1]);
            }
            Format::Cifar10 => out.fine.push(labels[0]),
        }
        out.images.extend_from_slice(pixels);
    }
    Ok(())
}

/// Reads one record file of `format`. See [`read_records_into`].
pub fn read_records(path: &Path, format: Format) -> Result<Records> {
    let mut records = Records::default();
    read_records_into(path, format, &mut records)?;
    Ok(records)
}

/// Writes `records` to `path` in the binary layout of `format`.
///
/// records.images: (N, 3, 32, 32) bytes; fine, coarse: (N,).
///
/// # Errors
/// [`Error::Invalid`] if the lengths disagree, a label is out of range, or the coarse labels are
/// missing (CIFAR-100) or present (CIFAR-10); [`Error::Io`] if the file cannot be written.
pub fn write_records(path: &Path, format: Format, records: &Records) -> Result<()> {
    const OP: &str = "write_records";
    let n = records.len();
    let invalid = |msg: String| Error::Invalid { op: OP, msg };
    if records.images.len() != n * IMAGE_BYTES {
        return Err(invalid(format!(
            "{} image bytes for {n} labels, expected {}",
            records.images.len(),
            n * IMAGE_BYTES
        )));
    }
    if let Some(&bad) = records
        .fine
        .iter()
        .find(|&&l| usize::from(l) >= format.num_classes())
    {
        return Err(invalid(format!(
            "fine label {bad} out of range for {} classes",
            format.num_classes()
        )));
    }
    let coarse = match (format, &records.coarse) {
        (Format::Cifar100, Some(c)) if c.len() == n => {
            if let Some(&bad) = c.iter().find(|&&l| usize::from(l) >= CIFAR100_COARSE) {
                return Err(invalid(format!(
                    "coarse label {bad} out of range for 20 classes"
                )));
            }
            Some(c)
        }
        (Format::Cifar100, _) => {
            return Err(invalid(format!("CIFAR-100 needs {n} coarse labels")));
        }
        (Format::Cifar10, None) => None,
        (Format::Cifar10, Some(_)) => {
            return Err(invalid("CIFAR-10 records have no coarse label".into()));
        }
    };
    let mut bytes = Vec::with_capacity(n * format.record_size());
    for i in 0..n {
        if let Some(c) = coarse {
            bytes.push(c[i]);
        }
        bytes.push(records.fine[i]);
        bytes.extend_from_slice(&records.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
    }
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Reads a label-name file: one name per line, blank lines ignored (the official files end with
/// one), exactly `expected` names.
///
/// # Errors
/// [`Error::Missing`] if absent, [`Error::Io`] if unreadable, the errors of
/// [`parse_label_names`].
pub fn read_label_names(path: &Path, format: Format, expected: usize) -> Result<Vec<String>> {
    if !path.exists() {
        return Err(format.missing(path));
    }
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_label_names(&bytes, path, expected)
}

/// Parses the bytes of a label-name file (see [`read_label_names`]); `path` only names the file
/// in errors.
///
/// # Errors
/// [`Error::Io`] with [`std::io::ErrorKind::InvalidData`] if the bytes are not UTF-8,
/// [`Error::LabelNames`] on the wrong number of names.
pub fn parse_label_names(bytes: &[u8], path: &Path, expected: usize) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(Error::LabelNames {
            path: path.to_path_buf(),
            got: names.len(),
            expected,
        });
    }
    Ok(names)
}

/// Writes label names, one a line.
pub fn write_label_names(path: &Path, names: &[String]) -> Result<()> {
    let mut text = names.join("\n");
    text.push('\n');
    fs::write(path, text).map_err(|e| Error::io(path, e))
}
