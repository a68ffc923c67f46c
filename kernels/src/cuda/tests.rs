//! CPU-versus-CUDA parity on the emulated device, and tests of the harness itself. Every test
//! name starts with `emu_`, so `cargo test emu` selects the suite.

mod batchnorm;
mod conv2d;
mod gemm;
mod harness;
mod tensors;

use super::parity::{assert_close, compare, uniform, Tol, EXACT};
