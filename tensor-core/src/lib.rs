//! The tensor type shared by every crate of the workspace.
//!
//! A [`Tensor`] is a [`Shape`] plus contiguous, row-major `f32` storage on a [`Device`]. Images are
//! NCHW: the last axis varies fastest. There are no strides and no views: a tensor always owns
//! its whole buffer, so kernels can take it as a plain slice, and [`Tensor::reshape`] never copies.
//!
//! Shape legend used in the docs of every crate: N batch, C channels in, K channels out,
//! H W spatial size in, OH OW spatial size out, F features.

pub mod alloc;
mod device;
mod error;
mod shape;
mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use shape::Shape;
pub use tensor::{Storage, Tensor};
