//! One module per subcommand of the `trainer` binary; each exposes `run(&Args)`.

use anyhow::{bail, Context};
use tensor_core::Device;

use crate::cli::{DeviceArg, RuntimeArgs};

pub mod bench;
pub mod download;
pub mod eval;
pub mod predict;
pub mod synth;
pub mod train;

/// Resolves `--device` and sizes rayon's thread pool from `--threads`; call once, first.
///
/// # Errors
/// `--device cuda` (this build has no CUDA backend yet), or a thread pool that cannot start.
pub fn setup_runtime(runtime: &RuntimeArgs) -> anyhow::Result<Device> {
    // The CUDA backend is not part of this build: `auto` means the CPU.
    let device = runtime.device.resolve(false);
    if let Device::Cuda(i) = device {
        bail!(
            "--device {}: this build has no CUDA backend yet (cuda:{i} requested); use --device cpu",
            match runtime.device {
                DeviceArg::Auto => "auto".to_string(),
                DeviceArg::Fixed(d) => d.to_string(),
            }
        );
    }
    if let Some(threads) = runtime.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .with_context(|| format!("--threads {threads}: could not start the thread pool"))?;
    }
    Ok(device)
}
