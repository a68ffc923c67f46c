use std::path::PathBuf;

/// Everything the trainer's library can refuse. Each variant names the file or the operation, and
/// the values that did not fit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, writing or renaming a file failed. (The field is not called `source`: as the
    /// error's cause it would be printed twice in a `{:#}` chain, once here and once after.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file exists but its contents are not what this crate writes (a corrupt checkpoint, a CSV
    /// with another header, a config that does not parse).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A checkpoint whose tensors do not match the model: one line per problem.
    #[error("checkpoint {} does not match the model:\n  {}", path.display(), problems.join("\n  "))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// An argument out of its valid range or of the wrong shape, described by the operation.
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// A loss or gradient that is NaN or infinite: the run has diverged.
    #[error("step {step}: {what} is not finite ({value})")]
    NonFinite {
        step: u64,
        /// "the loss", or the first parameter (in forward order) whose gradient is not finite.
        what: String,
        value: f64,
    },
    #[error(transparent)]
    Layer(#[from] nn_layers::Error),
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
    #[error(transparent)]
    Tensor(#[from] tensor_core::Error),
    #[error(transparent)]
    Data(#[from] cifar_data::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A file whose contents are not what was expected.
    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An argument an operation refuses.
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }
}
