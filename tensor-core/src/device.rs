use std::fmt;

/// Where a tensor's storage lives.
///
/// Tensors on [`Device::Cuda`] hold a cudarc buffer; the CUDA backend (`kernels::cuda`) opens
/// the GPU, moves tensors there and launches the kernels. [`Device::CudaEmu`] is the emulated
/// CUDA device of the tests: host memory, but every op runs the CUDA launch code and kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, computed on by rayon.
    #[default]
    Cpu,
    /// An NVIDIA GPU, by CUDA ordinal.
    Cuda(usize),
    /// The emulated CUDA device (tests): the `.cu` kernels compiled as host C++, host memory.
    CudaEmu,
}

impl Device {
    /// Whether ops on this device run the CUDA kernels (a real or an emulated GPU).
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_) | Device::CudaEmu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::CudaEmu => write!(f, "cuda-emu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// Parses `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Device::Cuda)
                    .map_err(|_| format!("invalid CUDA ordinal in device {s:?}")),
                None => Err(format!(
                    "unknown device {s:?}: expected cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, d) in [("cpu", Device::Cpu), ("cuda:3", Device::Cuda(3))] {
            assert_eq!(s.parse::<Device>().unwrap(), d);
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert!("tpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
    }
}
