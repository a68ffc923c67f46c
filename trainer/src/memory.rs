//! The memory a run uses, as `metrics.csv` reports it after each epoch (the process's resident
//! set, now and at its peak, and the GPU's used memory), and the error a run stops with when
//! the GPU runs out: one that names what did not fit and how much memory there was.

use std::path::Path;

use kernels::cuda::gpu::Gpu;
use tensor_core::Device;

const MIB: f64 = (1u64 << 20) as f64;

/// Memory in use at one moment, in MiB; `None` where it cannot be read (`/proc` off Linux, the
/// GPU's memory on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MemoryUse {
    /// The process's resident set (`VmRSS`).
    pub rss_mib: Option<f64>,
    /// The most the resident set has been (`VmHWM`).
    pub peak_rss_mib: Option<f64>,
    /// Used memory of the GPU the run is on (the driver's total minus free: every process's
    /// allocations and contexts).
    pub gpu_mib: Option<f64>,
}

impl MemoryUse {
    /// Returns the C heap's free pages to the system ([`release_free_heap`]), then reads the
    /// memory in use: what `metrics.csv` reports after each epoch.
    pub fn settled(device: Device) -> MemoryUse {
        tensor_core::alloc::trim();
        release_free_heap();
        MemoryUse::now(device)
    }

    /// Reads the memory in use now, by this process and on `device` (after waiting for its
    /// launches, so that memory freed in stream order is counted as free).
    pub fn now(device: Device) -> MemoryUse {
        let status = std::fs::read_to_string(Path::new("/proc/self/status")).unwrap_or_default();
        MemoryUse {
            rss_mib: status_kib(&status, "VmRSS:").map(|k| k / 1024.0),
            peak_rss_mib: status_kib(&status, "VmHWM:").map(|k| k / 1024.0),
            gpu_mib: gpu_memory(device).map(|(free, total)| (total - free) as f64 / MIB),
        }
    }
}

/// Hands the free pages of the C allocator's heaps back to the system (glibc's `malloc_trim`;
/// nothing elsewhere). Blocks below the caching allocator's size (`tensor_core::alloc`) come
/// from glibc, which keeps freed memory in its heaps; once an epoch, the trim makes the resident
/// set a measure of what the run holds rather than of what glibc kept.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers; it locks each heap and returns its
        // free pages, and may be called at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The value of the `/proc/self/status` line starting with `key` (`VmRSS:      1234 kB`), in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut words = line[key.len()..].split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// (free, total) bytes of the GPU `device` is, once its launches are done; `None` elsewhere.
fn gpu_memory(device: Device) -> Option<(usize, usize)> {
    let Device::Cuda(i) = device else {
        return None;
    };
    let gpu = Gpu::shared(i).ok()?;
    gpu.synchronize().ok()?;
    gpu.memory().ok()
}

/// Whether `err` (or an error it wraps) is the CUDA driver's out-of-memory error.
pub fn is_out_of_memory(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.to_string().contains("CUDA_ERROR_OUT_OF_MEMORY"))
}

/// The message [`explain_out_of_memory`] puts over the driver's error (a type of its own, so
/// that an error explained once is not explained again further up).
#[derive(Debug)]
struct OutOfMemory(String);

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `err` unchanged unless the GPU ran out of memory (and no explanation was added yet); then
/// `err` under a message saying that `what` (say, "a training step at --batch-size 250") needs
/// more memory than `device` has free, with the free and total memory read now (the failed
/// step's buffers are released by then) and what to do.
pub fn explain_out_of_memory(err: anyhow::Error, what: &str, device: Device) -> anyhow::Error {
    if !is_out_of_memory(&err) || err.downcast_ref::<OutOfMemory>().is_some() {
        return err;
    }
    let message = out_of_memory_message(what, device, gpu_memory(device));
    err.context(OutOfMemory(message))
}

/// The message of [`explain_out_of_memory`]; `memory` is the device's (free, total) bytes when
/// they could be read.
pub fn out_of_memory_message(what: &str, device: Device, memory: Option<(usize, usize)>) -> String {
    let has = match memory {
        Some((free, total)) => format!(
            "the {:.0} MiB free on {device} (of {:.0} MiB)",
            free as f64 / MIB,
            total as f64 / MIB
        ),
        None => format!("the memory free on {device}"),
    };
    format!(
        "out of GPU memory: {what} needs more than {has}; use a smaller batch size, or a GPU \
         with more memory free"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_read_from_proc() {
        let status = "Name:\ttrainer\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(102_400.0));
        assert_eq!(status_kib(status, "VmHWM:"), Some(204_800.0));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS: lots", "VmRSS:"), None);
        if cfg!(target_os = "linux") {
            let m = MemoryUse::now(Device::Cpu);
            let (rss, peak) = (m.rss_mib.unwrap(), m.peak_rss_mib.unwrap());
            assert!(rss > 0.0 && peak >= rss, "{m:?}");
            assert_eq!(m.gpu_mib, None);
        }
    }

    /// An allocation refused by the driver, as the CUDA backend reports it, becomes an error
    /// naming what did not fit and the device's memory; other errors pass unchanged.
    #[test]
    fn out_of_memory_names_the_batch_and_the_memory() {
        let driver = kernels::Error::Device {
            op: "cuda",
            msg: "allocating 1073741824 bytes: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \
                  \"out of memory\")"
                .into(),
        };
        let err = anyhow::Error::from(driver).context("training step");
        assert!(is_out_of_memory(&err));
        let msg = out_of_memory_message(
            "a training step at --batch-size 4096",
            Device::Cuda(1),
            Some((3 << 30, 80 << 30)),
        );
        assert_eq!(
            msg,
            "out of GPU memory: a training step at --batch-size 4096 needs more than the 3072 \
             MiB free on cuda:1 (of 81920 MiB); use a smaller batch size, or a GPU with more \
             memory free"
        );
        // The emulated device's memory cannot be read: the message says so without numbers.
        let msg = out_of_memory_message("x", Device::CudaEmu, None);
        assert!(
            msg.contains("needs more than the memory free on cuda-emu"),
            "{msg}"
        );
        let explained = explain_out_of_memory(err, "a step", Device::CudaEmu);
        let again = explain_out_of_memory(explained.context("epoch 3"), "a run", Device::CudaEmu);
        let full = format!("{again:#}");
        assert!(
            full.starts_with("epoch 3: out of GPU memory: a step needs more than")
                && full.contains("allocating 1073741824 bytes")
                && !full.contains("a run"),
            "explained once, where it happened: {full}"
        );
        let other = anyhow::anyhow!("conv2d: shapes differ");
        let same = explain_out_of_memory(other, "a step", Device::CudaEmu);
        assert_eq!(format!("{same:#}"), "conv2d: shapes differ");
    }
}
