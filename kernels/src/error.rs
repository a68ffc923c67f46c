/// Everything a kernel can refuse.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A tensor-level error (wrong shape, wrong device, bad length).
    #[error(transparent)]
    Tensor(#[from] tensor_core::Error),
    /// Arguments whose shapes do not fit together, described by the op.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A parameter out of its valid range (a keep probability of 0, a zero stride, ...).
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// The CUDA device, driver or run-time compiler failed (or is absent), named by the op.
    #[error("{op}: {msg}")]
    Device { op: &'static str, msg: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
