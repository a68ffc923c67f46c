use crate::{Device, Shape};

/// Everything that can go wrong when building or viewing a tensor.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// The number of values does not match the shape.
    #[error("{op}: shape {shape} holds {expected} values, got {got}")]
    DataLength {
        op: &'static str,
        shape: Shape,
        expected: usize,
        got: usize,
    },
    /// A reshape to a shape with a different number of elements.
    #[error("reshape: cannot view {from} ({from_len} values) as {to} ({to_len} values)")]
    Reshape {
        from: Shape,
        from_len: usize,
        to: Shape,
        to_len: usize,
    },
    /// An operation received a tensor of the wrong shape.
    #[error("{op}: {what} has shape {got}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        got: Shape,
        expected: String,
    },
    /// The tensor lives on a device the operation cannot read directly.
    #[error("{op}: tensor is on {got}, expected {expected}")]
    WrongDevice {
        op: &'static str,
        got: Device,
        expected: Device,
    },
    /// Tensors of one operation on different devices.
    #[error("{op}: {what} is on {got}, the other tensors on {expected}")]
    MixedDevices {
        op: &'static str,
        what: &'static str,
        got: Device,
        expected: Device,
    },
    /// The GPU driver failed while copying or filling device memory.
    #[error("{op}: {msg}")]
    Device { op: &'static str, msg: String },
    /// Any other invalid argument, described by the operation.
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
