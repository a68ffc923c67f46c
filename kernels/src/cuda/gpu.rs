//! The real GPU through cudarc: the driver and NVRTC are loaded dynamically, so a binary built
//! here runs (and reports "no GPU") on machines without CUDA. Each module is compiled by NVRTC
//! for the device's own architecture on first use and kept for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PushKernelArg,
};
use cudarc::nvrtc::CompileOptions;

use super::launch::{Backend, Elem, Kernel, KernelParams, LaunchConfig};
use super::source::Module;
use crate::{Error, Result};

const OP: &str = "cuda";

/// Dynamic shared memory a kernel may take without asking: a launch with more raises the
/// function's limit first (the tensor-core GEMM's 128 x 128 tile takes 96 KiB).
const DEFAULT_DYNAMIC_SHARED_BYTES: u32 = 48 * 1024;

fn device_err(msg: impl std::fmt::Display) -> Error {
    Error::Device {
        op: OP,
        msg: msg.to_string(),
    }
}

/// Whether the CUDA driver library can be loaded (it does not say that a GPU is present).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether NVRTC can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the NVRTC library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's `--gpu-architecture` for compute capability (major, minor), e.g. "sm_90".
pub fn arch_name(major: i32, minor: i32) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<(i32, i32), &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .expect("arch name table");
    names
        .entry((major, minor))
        .or_insert_with(|| Box::leak(format!("sm_{major}{minor}").into_boxed_str()))
}

/// Compiles kernel module `module` (one of `crate::modules::MODULES`) to PTX for `arch`.
pub fn compile_ptx(module: &Module, arch: &'static str) -> Result<cudarc::nvrtc::Ptx> {
    if !nvrtc_present() {
        return Err(device_err(
            "NVRTC (libnvrtc) is not installed or not on LD_LIBRARY_PATH",
        ));
    }
    let src = module
        .expanded()
        .map_err(|e| device_err(format!("{}: {e}", module.path)))?;
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(module.path.to_string()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts)
        .map_err(|e| device_err(format!("compiling {} for {arch}: {e:?}", module.path)))
}

/// One GPU: its context, a stream every launch goes to, and the kernels loaded so far.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    capability: (i32, i32),
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
}

impl Gpu {
    /// The GPU of ordinal `ordinal`, opened once per process; an `Err` that says why when there
    /// is no driver or no such device.
    pub fn shared(ordinal: usize) -> Result<&'static Gpu> {
        static GPUS: OnceLock<Mutex<HashMap<usize, &'static Gpu>>> = OnceLock::new();
        let mut gpus = GPUS
            .get_or_init(Default::default)
            .lock()
            .expect("gpu table");
        if let Some(g) = gpus.get(&ordinal) {
            return Ok(g);
        }
        let gpu: &'static Gpu = Box::leak(Box::new(Gpu::open(ordinal)?));
        gpus.insert(ordinal, gpu);
        Ok(gpu)
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        if !driver_present() {
            return Err(device_err("no CUDA driver (libcuda) on this machine"));
        }
        let count = CudaContext::device_count().map_err(device_err)?;
        if ordinal >= count.max(0) as usize {
            return Err(device_err(format!(
                "GPU {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(device_err)?;
        let (major, minor) = ctx.compute_capability().map_err(device_err)?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: arch_name(major, minor),
            capability: (major, minor),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The device's CUDA ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's name, as the driver reports it.
    pub fn name(&self) -> Result<String> {
        self.ctx.name().map_err(device_err)
    }

    /// NVRTC's name of the device's architecture, e.g. "sm_90".
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The device's compute capability (major, minor), e.g. (9, 0) for an H100 or H200.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    /// The stream every launch goes to, for a library that must order its work with ours
    /// (cuBLAS as a yardstick in the benches).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for every launch so far.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(device_err)
    }

    /// The device's memory as the driver reports it, in bytes: (free, total). Used memory
    /// (total - free) counts every process's allocations and the contexts, not only ours.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(device_err)
    }

    /// The loaded function of `kernel`, compiling and loading its module on first use.
    fn function<P>(&self, kernel: &Kernel<P>) -> Result<CudaFunction> {
        let (module, name) = (kernel.module, kernel.name);
        let mut functions = self.functions.lock().expect("function table");
        if let Some(f) = functions.get(&(module.name, name)) {
            return Ok(f.clone());
        }
        let loaded = self
            .ctx
            .load_module(compile_ptx(module, self.arch)?)
            .map_err(device_err)?;
        let f = loaded
            .load_function(name)
            .map_err(|e| device_err(format!("{}: kernel {name}: {e}", module.name)))?;
        functions.insert((module.name, name), f.clone());
        Ok(f)
    }
}

impl Backend for Gpu {
    type Buf<T: Elem> = CudaSlice<T>;

    fn alloc<T: Elem>(&self, len: usize) -> Result<CudaSlice<T>> {
        let bytes = len * std::mem::size_of::<T>();
        self.stream
            .alloc_zeros(len)
            .map_err(|e| device_err(format!("allocating {bytes} bytes: {e}")))
    }

    fn upload<T: Elem>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        let bytes = std::mem::size_of_val(host);
        self.stream
            .clone_htod(host)
            .map_err(|e| device_err(format!("uploading {bytes} bytes: {e}")))
    }

    fn download<T: Elem>(&self, buf: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(device_err)
    }

    fn len<T: Elem>(&self, buf: &CudaSlice<T>) -> usize {
        buf.len()
    }

    fn addr<T: Elem>(&self, buf: &CudaSlice<T>) -> u64 {
        // Every launch goes to this one stream, so stream order alone orders the accesses.
        buf.device_ptr(&self.stream).0
    }

    fn addr_mut<T: Elem>(&self, buf: &mut CudaSlice<T>) -> u64 {
        buf.device_ptr_mut(&self.stream).0
    }

    unsafe fn launch<P: KernelParams>(
        &self,
        kernel: Kernel<P>,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        let f = self.function(&kernel)?;
        if cfg.shared_bytes > DEFAULT_DYNAMIC_SHARED_BYTES {
            let bytes = i32::try_from(cfg.shared_bytes).map_err(device_err)?;
            // The driver call acts in the current context, as cudarc's launches bind it.
            self.ctx.bind_to_thread().map_err(device_err)?;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes,
            )
            .map_err(|e| {
                device_err(format!(
                    "{}: {bytes} bytes of shared memory: {e}",
                    kernel.name
                ))
            })?;
        }
        let lc = cudarc::driver::LaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: cfg.shared_bytes,
        };
        let mut builder = self.stream.launch_builder(&f);
        builder.arg(params);
        // SAFETY: P mirrors the kernel's one C parameter struct (KernelParams), and the caller
        // vouches that its addresses are live buffers of this GPU, large enough for the grid.
        unsafe { builder.launch(lc) }
            .map(|_| ())
            .map_err(|e| device_err(format!("launching {}: {e}", kernel.name)))
    }
}
