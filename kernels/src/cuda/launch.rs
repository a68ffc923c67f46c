//! What every CUDA backend offers the launch code: buffers, copies and kernel launches.
//!
//! The launch code of each op (its `cuda.rs`) is written once against [`Backend`]; the real
//! GPU ([`super::gpu::Gpu`]) and the emulated test device run it unchanged.

use std::marker::PhantomData;

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

use super::emu::EmuEntry;
use super::source::{define, Module, COMMON_CUH};
use crate::{Error, Result};

/// An element type a device buffer can hold.
pub trait Elem:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + Unpin + 'static
{
}
impl Elem for f32 {}
impl Elem for u32 {}
impl Elem for u8 {}
impl Elem for f64 {}

/// A kernel's parameter struct: `#[repr(C)]`, the field-by-field twin of the C struct the
/// kernel takes by value, with device addresses as `u64`. Declared with `params!`, which
/// writes its [`StructLayout`]; a test (`crate::modules`) compares that with the C struct.
///
/// # Safety
/// The type must be `#[repr(C)]` with exactly the C struct's fields, in order, of the same sizes.
pub unsafe trait KernelParams: DeviceRepr + Copy + CType {
    /// The struct as Rust lays it out, field by field.
    const LAYOUT: StructLayout;
}

/// The C type a Rust field type stands for in a parameter struct.
pub trait CType {
    /// `pointer` (a device address), `uint32_t`, `float`, `double`, or a struct's C name.
    const C_TYPE: &'static str;
}
impl CType for u64 {
    const C_TYPE: &'static str = "pointer";
}
impl CType for u32 {
    const C_TYPE: &'static str = "uint32_t";
}
impl CType for f32 {
    const C_TYPE: &'static str = "float";
}
impl CType for f64 {
    const C_TYPE: &'static str = "double";
}

/// How a parameter struct is laid out in Rust, to be compared with its C twin.
#[derive(Debug, Clone, Copy)]
pub struct StructLayout {
    /// The C struct's name.
    pub c_name: &'static str,
    pub size: usize,
    pub fields: &'static [FieldLayout],
}

/// One field of a [`StructLayout`]: its name, the C type it stands for ([`CType`]), its offset
/// and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: &'static str,
    pub c_type: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// Declares kernel parameter structs: `#[repr(C)]`, `Copy`, passable to a CUDA launch, each the
/// field-by-field twin of the C struct of the same name (`pub struct MaskKeyC as MaskKey`: of
/// another name), with its [`StructLayout`].
macro_rules! params {
    (@c_name $name:ident) => { stringify!($name) };
    (@c_name $name:ident $c_name:ident) => { stringify!($c_name) };
    ($(
        $(#[$doc:meta])*
        pub struct $name:ident $(as $c_name:ident)? { $(pub $field:ident: $ty:ty,)* }
    )*) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name { $(pub $field: $ty,)* }
        // SAFETY: a plain-old-data #[repr(C)] struct of integers and floats.
        unsafe impl ::cudarc::driver::DeviceRepr for $name {}
        impl $crate::cuda::launch::CType for $name {
            const C_TYPE: &'static str = $crate::cuda::launch::params!(@c_name $name $($c_name)?);
        }
        // SAFETY: mirrors the C struct of the same name in the kernel source, field by field
        // (checked against the source by the test of `crate::modules`).
        unsafe impl $crate::cuda::KernelParams for $name {
            const LAYOUT: $crate::cuda::launch::StructLayout = $crate::cuda::launch::StructLayout {
                c_name: $crate::cuda::launch::params!(@c_name $name $($c_name)?),
                size: ::std::mem::size_of::<$name>(),
                fields: &[$($crate::cuda::launch::FieldLayout {
                    name: stringify!($field),
                    c_type: <$ty as $crate::cuda::launch::CType>::C_TYPE,
                    offset: ::std::mem::offset_of!($name, $field),
                    size: ::std::mem::size_of::<$ty>(),
                }),*],
            };
        }
    )*};
}
pub(crate) use params;

/// A kernel: its module (the `.cu` file, named after its op), its `extern "C"` name and its
/// entry point on the emulated device, typed by its parameter struct so that a launch cannot
/// pass the wrong one. Built by `kernel!`.
pub struct Kernel<P> {
    pub module: &'static Module,
    pub name: &'static str,
    pub(crate) emu: EmuEntry,
    params: PhantomData<P>,
}

impl<P> Kernel<P> {
    pub const fn new(module: &'static Module, name: &'static str, emu: EmuEntry) -> Kernel<P> {
        Kernel {
            module,
            name,
            emu,
            params: PhantomData,
        }
    }
}

impl<P> Clone for Kernel<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P> Copy for Kernel<P> {}

/// The kernel `$name` (its `extern "C"` name) of `$module` (a [`Module`] constant), typed by the
/// constant it initialises, e.g.
/// `pub const RELU_FORWARD: Kernel<ReluForwardParams> = kernel!(MODULE, relu_forward);`.
/// It declares the two functions `EMU_KERNEL($name, Params)` exports from the emulator build
/// (common.cuh, cuda_emu.h): the launch and the size of the C parameter struct.
macro_rules! kernel {
    ($module:expr, $name:ident) => {{
        extern "C" {
            #[link_name = concat!("emu_", stringify!($name))]
            fn launch(
                grid: $crate::cuda::emu::Dim3,
                block: $crate::cuda::emu::Dim3,
                shared: u32,
                params: *const ::std::ffi::c_void,
            );
            #[link_name = concat!("emu_", stringify!($name), "_params_size")]
            fn params_size() -> usize;
        }
        $crate::cuda::Kernel::new(
            &$module,
            stringify!($name),
            $crate::cuda::emu::EmuEntry {
                launch,
                params_size,
            },
        )
    }};
}
pub(crate) use kernel;

/// Grid and block sizes (x, y, z) and the dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Threads per block of the elementwise kernels: `ELEMENTWISE_THREADS` of common.cuh.
pub const ELEMENTWISE_THREADS: u32 = define(COMMON_CUH.source, "ELEMENTWISE_THREADS");

/// Most blocks an elementwise (grid-stride) launch uses, about one full wave of an H100's 132
/// multiprocessors at 2048 threads each; more values loop.
pub const MAX_ELEMENTWISE_BLOCKS: u32 = 1024;

impl LaunchConfig {
    /// A 1-D grid-stride launch over `n` values: one thread per value up to the block cap.
    pub fn elementwise(n: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(ELEMENTWISE_THREADS as usize)
            .clamp(1, MAX_ELEMENTWISE_BLOCKS as usize);
        LaunchConfig {
            grid: (blocks as u32, 1, 1),
            block: (ELEMENTWISE_THREADS, 1, 1),
            shared_bytes: 0,
        }
    }

    /// `blocks` blocks of `threads` threads each, on x, with `shared_bytes` of dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32, shared_bytes: u32) -> LaunchConfig {
        LaunchConfig {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
            shared_bytes,
        }
    }
}

/// The one shape of the elementwise kernels: a grid-stride launch over `n` values
/// ([`LaunchConfig::elementwise`]) whose buffers each hold n values, checked as their addresses
/// are taken, with n passed as the kernel's `uint32_t` count.
pub struct Elementwise<'a, B: Backend> {
    dev: &'a B,
    op: &'static str,
    n: usize,
}

impl<'a, B: Backend> Elementwise<'a, B> {
    /// A launch of `op` over `n` values on `dev`.
    pub fn new(dev: &'a B, op: &'static str, n: usize) -> Self {
        Elementwise { dev, op, n }
    }

    /// The address the kernel reads `buf` at, once `buf` is checked to hold n values.
    pub fn input<T: Elem>(&self, name: &str, buf: &B::Buf<T>) -> Result<u64> {
        check_len(self.dev, self.op, name, buf, self.n)?;
        Ok(self.dev.addr(buf))
    }

    /// The address the kernel writes `buf` at, once `buf` is checked to hold n values.
    pub fn output<T: Elem>(&self, name: &str, buf: &mut B::Buf<T>) -> Result<u64> {
        check_len(self.dev, self.op, name, buf, self.n)?;
        Ok(self.dev.addr_mut(buf))
    }

    /// n as the kernel's count (an error if it exceeds 32 bits).
    pub fn count(&self) -> Result<u32> {
        count(self.op, self.n)
    }

    /// Launches `kernel` with `params` over the n values.
    ///
    /// # Safety
    /// As [`Backend::launch`]: the addresses in `params` come from [`Elementwise::input`] and
    /// [`Elementwise::output`] (or from buffers that the kernel reads only within their length),
    /// its count is [`Elementwise::count`], and the kernel touches only indices below it.
    pub unsafe fn launch<P: KernelParams>(&self, kernel: Kernel<P>, params: &P) -> Result<()> {
        // SAFETY: as the caller guarantees.
        unsafe {
            self.dev
                .launch(kernel, LaunchConfig::elementwise(self.n), params)
        }
    }
}

/// A CUDA device as the launch code sees it.
pub trait Backend {
    /// A buffer of `len` values of `T` in this device's memory.
    type Buf<T: Elem>;

    /// A buffer of `len` zeros.
    fn alloc<T: Elem>(&self, len: usize) -> Result<Self::Buf<T>>;
    /// A buffer holding a copy of `host`.
    fn upload<T: Elem>(&self, host: &[T]) -> Result<Self::Buf<T>>;
    /// The buffer's contents, copied to the host (waits for the launches before it).
    fn download<T: Elem>(&self, buf: &Self::Buf<T>) -> Result<Vec<T>>;
    /// How many values the buffer holds.
    fn len<T: Elem>(&self, buf: &Self::Buf<T>) -> usize;
    /// The address a kernel reads the buffer at.
    fn addr<T: Elem>(&self, buf: &Self::Buf<T>) -> u64;
    /// The address a kernel writes the buffer at.
    fn addr_mut<T: Elem>(&self, buf: &mut Self::Buf<T>) -> u64;
    /// Runs `kernel` over the grid of `cfg` with `params`.
    ///
    /// # Safety
    /// Every address in `params` comes from [`Backend::addr`] (read-only) or [`Backend::addr_mut`]
    /// of a live buffer of this backend, and the kernel, under `cfg` and the sizes in `params`,
    /// stays inside those buffers.
    unsafe fn launch<P: KernelParams>(
        &self,
        kernel: Kernel<P>,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()>;
}

/// Checks that `buf` holds `want` values: an [`Error::Shape`] naming `op` and `name` if not.
pub fn check_len<B: Backend, T: Elem>(
    dev: &B,
    op: &'static str,
    name: &str,
    buf: &B::Buf<T>,
    want: usize,
) -> Result<()> {
    let len = dev.len(buf);
    if len == want {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            msg: format!("{name} holds {len} values, expected {want}"),
        })
    }
}

/// `n` as the kernels' `uint32_t` count: an [`Error::Invalid`] naming `op` if it does not fit.
pub fn count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Invalid {
        op,
        msg: format!("{n} values exceed the kernels' 32-bit counts"),
    })
}
