use std::path::PathBuf;

use crate::format::{Format, HOME_PAGE};

/// Everything that can go wrong when reading, downloading, augmenting or batching a dataset.
///
/// Every variant that concerns a file names it, and every variant about missing data says how to
/// get it, so the trainer can show the message as it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory or file of the dataset is not there.
    #[error(
        "{path}: not found. Download the dataset with `trainer download --dataset {dataset}`, or \
         on a machine without internet access install the official {archive} you have with \
         `trainer download --dataset {dataset} --archive FILE`"
    )]
    Missing {
        path: PathBuf,
        /// The `--dataset` value of the trainer: `cifar100` or `cifar10`.
        dataset: &'static str,
        archive: &'static str,
    },
    /// An I/O error on a named file or directory.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A data file that holds no record at all.
    #[error("{path}: the file is empty, expected records of {record_size} bytes")]
    EmptyFile { path: PathBuf, record_size: usize },
    /// A data file whose size is not a whole number of records.
    #[error("{path}: {size} bytes is not a whole number of {record_size}-byte records")]
    RecordSize {
        path: PathBuf,
        size: u64,
        record_size: usize,
    },
    /// A label byte outside the classes of the format.
    #[error("{path}: record {index} has {kind} label {value}, expected less than {classes}")]
    Label {
        path: PathBuf,
        index: usize,
        /// `fine`, `coarse` or `class`.
        kind: &'static str,
        value: u8,
        classes: usize,
    },
    /// A label-name file with the wrong number of names.
    #[error("{path}: {got} label names, expected {expected} (one per line)")]
    LabelNames {
        path: PathBuf,
        got: usize,
        expected: usize,
    },
    /// The server could not be reached: no network, DNS failure, refused connection, timeout.
    #[error(
        "could not reach {url} ({reason}); this machine looks offline. On a machine with internet \
         access, download {archive} from {HOME_PAGE}, copy it here and install it with \
         `trainer download --dataset {dataset} --dir {root} --archive FILE` (it checks the MD5 \
         and unpacks it so that {expected} exists)",
        dataset = .format.cli_name(),
        archive = .format.archive_name(),
        root = .root.display()
    )]
    Offline {
        url: String,
        reason: String,
        format: Format,
        /// The directory the dataset was to be unpacked into (the trainer's `--dir`).
        root: PathBuf,
        /// A file of the unpacked dataset, at the place the loader will look for it.
        expected: PathBuf,
    },
    /// The server answered, but not with the archive (HTTP error status, broken transfer).
    #[error("download of {url} failed: {reason}")]
    Http { url: String, reason: String },
    /// The downloaded archive does not have the published MD5; it has been deleted.
    #[error(
        "{url}: MD5 of the download is {got}, expected {expected}; the download was removed and \
         nothing was unpacked"
    )]
    Checksum {
        url: String,
        got: String,
        expected: String,
    },
    /// A local archive without the published MD5 of the dataset asked for.
    #[error("{path}: MD5 is {got}, expected {expected} (the published MD5 of {archive}){hint}; nothing was unpacked")]
    ArchiveChecksum {
        path: PathBuf,
        got: String,
        expected: String,
        archive: &'static str,
        /// Empty, or what the file is instead (the other dataset's archive) and the flag to use.
        hint: String,
    },
    /// A corrupt, truncated or oversized archive, or one without the expected files.
    #[error("archive {archive}: {reason}")]
    Archive { archive: String, reason: String },
    /// An archive entry refused by the unpacker (see [`crate::archive`]): an absolute path or
    /// `..`, a link, a device file, an entry that would overwrite one unpacked before it.
    #[error("archive {archive}: entry {entry:?} {reason}; nothing was unpacked")]
    UnsafeEntry {
        archive: String,
        entry: String,
        reason: String,
    },
    /// A bad argument to a function of this crate.
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// The background batch thread panicked or stopped before the end of the epoch.
    #[error("batch loader: {0}")]
    Loader(String),
    /// An error building a tensor.
    #[error(transparent)]
    Tensor(#[from] tensor_core::Error),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
