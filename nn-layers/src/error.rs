/// Everything a layer can refuse.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
    #[error(transparent)]
    Tensor(#[from] tensor_core::Error),
    /// A layer built with arguments that cannot work (zero channels, keep probability 0, ...).
    #[error("{layer}: {msg}")]
    Config { layer: &'static str, msg: String },
    /// A stage's output holds a NaN or an infinity (found by a forward pass whose
    /// [`ForwardCtx::check_finite`](crate::ForwardCtx::check_finite) is on).
    #[error("{stage}: the output holds a NaN or an infinity")]
    NonFinite { stage: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
