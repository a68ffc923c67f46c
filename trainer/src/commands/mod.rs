//! One module per subcommand of the `trainer` binary; each exposes `run(&Args)`.

use anyhow::{bail, Context};
use kernels::cuda::gpu::Gpu;
use tensor_core::Device;

use crate::cli::RuntimeArgs;
use crate::config::{DeviceArg, PrecisionKind};
use crate::model::ResNet;
use crate::state::Loaded;

pub mod bench;
pub mod download;
pub mod eval;
pub mod predict;
pub mod preview;
pub mod synth;
pub mod train;

/// Resolves `--device` and sizes rayon's thread pool from `--threads`; call once, first.
/// `auto` takes GPU 0 when the CUDA driver loads and the GPU opens, else the CPU; `cuda[:N]`
/// opens GPU N (its kernels compile on first use).
///
/// # Errors
/// `--device cuda[:N]` without a usable GPU N, or a thread pool that cannot start.
pub fn setup_runtime(runtime: &RuntimeArgs) -> anyhow::Result<Device> {
    let device = resolve_device(runtime.device)?;
    if let Some(threads) = runtime.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .with_context(|| format!("--threads {threads}: could not start the thread pool"))?;
    }
    // Calibration measures CPU convolutions only; a GPU run never calls them.
    kernels::conv2d::calibrate::set_calibration(runtime.conv_calibration.is_on());
    Ok(device)
}

/// The device as a run reports it: `cpu (N threads)`, or `cuda:I (NAME, ARCH)`.
pub fn describe_device(device: Device) -> String {
    match device {
        Device::Cuda(i) => match Gpu::shared(i) {
            Ok(gpu) => {
                let name = gpu.name().unwrap_or_else(|_| "unnamed GPU".into());
                format!("{device} ({name}, {})", gpu.arch())
            }
            Err(_) => device.to_string(),
        },
        _ => format!("{device} ({} threads)", rayon::current_num_threads()),
    }
}

/// Runs a loaded checkpoint's model in `--precision` when given, else in the mode it was trained
/// in (its weights are FP32 either way), after checking that `device` runs that mode.
///
/// # Errors
/// A mode `device` cannot run, naming both.
pub fn set_precision(
    model: &mut ResNet,
    flag: Option<PrecisionKind>,
    loaded: &Loaded,
    device: Device,
) -> anyhow::Result<()> {
    let precision = flag.unwrap_or(loaded.config.run.precision);
    precision.check_device(device)?;
    model.set_precision(precision.into());
    Ok(())
}

/// The device `--device` names: `auto` is GPU 0 when the CUDA driver loads and the GPU opens,
/// else the CPU; `cuda[:N]` must open (once per process; later calls are free).
///
/// # Errors
/// `cuda[:N]` without a usable GPU N.
pub fn resolve_device(arg: DeviceArg) -> anyhow::Result<Device> {
    let gpu0 = || kernels::cuda::gpu::driver_present() && Gpu::shared(0).is_ok();
    let device = arg.resolve(matches!(arg, DeviceArg::Auto) && gpu0());
    if let Device::Cuda(i) = device {
        if let Err(e) = Gpu::shared(i) {
            bail!("--device {device}: no usable CUDA GPU {i} ({e}); use --device cpu");
        }
    }
    Ok(device)
}
