//! The emulated CUDA device of the tests: the kernels compiled as host C++ by `build.rs` (with
//! `kernels/cuda-emu/cuda_emu.h`), launched through FFI, with host memory standing in for device
//! memory. It runs the very launch code the GPU runs ([`super::ops`]). Tensors on
//! [`tensor_core::Device::CudaEmu`] hold its buffers, so whole layers and models run on it too.

use std::cell::Cell;
use std::ffi::c_void;

use super::launch::{Backend, Elem, Kernel, KernelParams, LaunchConfig};
use crate::{Error, Result};

/// `dim3` of cuda_emu.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Dim3 {
        Dim3 { x, y, z }
    }
}

type LaunchFn = unsafe extern "C" fn(Dim3, Dim3, u32, *const c_void);
type SizeFn = unsafe extern "C" fn() -> usize;

/// Declares the `emu_<kernel>` entry points `EMU_KERNEL` exports, and finds them by name.
macro_rules! emu_kernels {
    ($($name:ident),* $(,)?) => {
        mod ffi {
            $(
                pub mod $name {
                    extern "C" {
                        #[link_name = concat!("emu_", stringify!($name))]
                        pub fn launch(grid: super::super::Dim3, block: super::super::Dim3, shared: u32, params: *const std::ffi::c_void);
                        #[link_name = concat!("emu_", stringify!($name), "_params_size")]
                        pub fn params_size() -> usize;
                    }
                }
            )*
        }

        fn lookup(name: &str) -> Option<(LaunchFn, SizeFn)> {
            match name {
                $(stringify!($name) => Some((ffi::$name::launch as LaunchFn, ffi::$name::params_size as SizeFn)),)*
                _ => None,
            }
        }
    };
}

emu_kernels! {
    relu_forward, relu_backward,
    add, add_assign,
    dropout_apply,
    adam_update, sgd_update,
    sum_of_squares_partial, sum_partials, scale_in_place,
    softmax_ce_forward, softmax_ce_backward, softmax_ce_tally,
    maxpool_forward, maxpool_backward,
    dropblock_mask, dropblock_scale, dropblock_apply,
    batchnorm_moments_partial, batchnorm_moments_finish, batchnorm_running_stats,
    batchnorm_normalize, batchnorm_grad_partial, batchnorm_grad_finish, batchnorm_input_grad,
    sgemm_128, sgemm_64,
    gemm_tf32_128_nn, gemm_tf32_128_nt, gemm_tf32_128_tn, gemm_tf32_128_tt,
    gemm_tf32_64_nn, gemm_tf32_64_nt, gemm_tf32_64_tn, gemm_tf32_64_tt,
    gemm_bf16_128_nn, gemm_bf16_128_nt, gemm_bf16_128_tn, gemm_bf16_128_tt,
    gemm_bf16_64_nn, gemm_bf16_64_nt, gemm_bf16_64_tn, gemm_bf16_64_tt,
    conv2d_forward_128, conv2d_forward_64,
    conv2d_backward_data_128, conv2d_backward_data_64,
    conv2d_backward_weight_128, conv2d_backward_weight_64,
    conv2d_sum_splits,
    conv2d_forward_tf32_128, conv2d_forward_tf32_64, conv2d_forward_bf16_128, conv2d_forward_bf16_64,
    f32_to_bf16, bf16_to_f32, round_to_tf32,
    broken_relu_forward, reverse_in_block, reverse_in_block_no_barrier, warp_sums,
    mma_tf32_fragments, mma_tf32_fragments_transposed, mma_bf16_fragments, ldmatrix_fragments,
    cp_async_reverse, cp_async_reverse_no_wait, cp_async_groups, cp_async_zero_fill,
}

/// The emulated device. Launches run one at a time (the emulator holds a lock), each block's
/// threads concurrently.
#[derive(Debug, Default)]
pub struct Emu;

/// A buffer of the emulated device: host memory (what `Storage::Emu` holds for f32).
pub type EmuBuf<T> = Vec<T>;

const OP: &str = "cuda emulator";

thread_local! {
    static DOWNLOADS: Cell<u64> = const { Cell::new(0) };
}

/// How many buffers [`Emu`] has copied to the host for the calling thread so far. On a GPU each
/// such copy waits for every launch before it, so a test counts a computation's waits with it.
/// Per thread, so that tests running side by side do not count each other's copies.
pub fn downloads_on_this_thread() -> u64 {
    DOWNLOADS.with(Cell::get)
}

impl Backend for Emu {
    type Buf<T: Elem> = EmuBuf<T>;

    fn alloc<T: Elem>(&self, len: usize) -> Result<EmuBuf<T>> {
        Ok(vec![T::default(); len])
    }

    fn upload<T: Elem>(&self, host: &[T]) -> Result<EmuBuf<T>> {
        Ok(host.to_vec())
    }

    fn download<T: Elem>(&self, buf: &EmuBuf<T>) -> Result<Vec<T>> {
        DOWNLOADS.with(|d| d.set(d.get() + 1));
        Ok(buf.clone())
    }

    fn len<T: Elem>(&self, buf: &EmuBuf<T>) -> usize {
        buf.len()
    }

    fn addr<T: Elem>(&self, buf: &EmuBuf<T>) -> u64 {
        buf.as_ptr() as u64
    }

    fn addr_mut<T: Elem>(&self, buf: &mut EmuBuf<T>) -> u64 {
        buf.as_mut_ptr() as u64
    }

    unsafe fn launch<P: KernelParams>(
        &self,
        kernel: Kernel<P>,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        let (launch, size) = lookup(kernel.name).ok_or_else(|| Error::Device {
            op: OP,
            msg: format!("no emulated kernel named {}", kernel.name),
        })?;
        // SAFETY: a function of no arguments returning sizeof of the C struct.
        let c_size = unsafe { size() };
        if c_size != std::mem::size_of::<P>() {
            return Err(Error::Device {
                op: OP,
                msg: format!(
                    "{}: the C parameter struct has {c_size} bytes, the Rust one {}",
                    kernel.name,
                    std::mem::size_of::<P>()
                ),
            });
        }
        // SAFETY: the sizes match and P mirrors the C struct (KernelParams); the caller vouches
        // for the addresses inside it. The emulator copies the struct before returning.
        unsafe {
            launch(
                cfg.grid.into(),
                cfg.block.into(),
                cfg.shared_bytes,
                params as *const P as *const c_void,
            )
        };
        Ok(())
    }
}
