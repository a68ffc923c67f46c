//! The emulated CUDA device of the tests: the kernels compiled as host C++ by `build.rs` (with
//! `kernels/cuda-emu/cuda_emu.h`), launched through FFI, with host memory standing in for device
//! memory. It runs the very launch code the GPU runs (each op's `cuda.rs`). Tensors on
//! [`tensor_core::Device::CudaEmu`] hold its buffers, so whole layers and models run on it too.

use std::cell::Cell;
use std::ffi::c_void;

use super::launch::{Backend, Elem, Kernel, KernelParams, LaunchConfig};
use crate::{Error, Result};

/// `dim3` of cuda_emu.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Dim3 {
        Dim3 { x, y, z }
    }
}

/// A kernel's two functions in the emulator build, which `EMU_KERNEL(name, Params)` exports
/// (cuda_emu.h) and `kernel!` declares: `emu_<name>` runs a launch,
/// `emu_<name>_params_size` returns `sizeof(Params)`.
#[derive(Debug, Clone, Copy)]
pub struct EmuEntry {
    pub launch: unsafe extern "C" fn(Dim3, Dim3, u32, *const c_void),
    pub params_size: unsafe extern "C" fn() -> usize,
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
        let EmuEntry {
            launch,
            params_size,
        } = kernel.emu;
        // SAFETY: a function of no arguments returning sizeof of the C struct.
        let c_size = unsafe { params_size() };
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
