//! Moving a layer's or a model's state between devices: every parameter (value and gradient)
//! and every buffer (batch norm's running statistics), through `kernels::cuda::to_device`.
//! Layers allocate their outputs on their input's device (`Tensor::new_zeros`), so a model
//! whose state is on a device runs there once its input is.

use tensor_core::{Device, Tensor};

use crate::{Parameters, Result};

/// Replaces `t` with a copy of itself on `device` (nothing happens if it is already there).
///
/// # Errors
/// The GPU cannot be opened or a copy fails.
pub fn move_tensor(t: &mut Tensor, device: Device) -> Result<()> {
    if t.device() != device {
        *t = kernels::cuda::to_device(t, device)?;
    }
    Ok(())
}

/// `t` on `device`, by value: a batch is copied up once before its forward pass (nothing is
/// copied if it is already there).
///
/// # Errors
/// The GPU cannot be opened or the copy fails.
pub fn into_device(mut t: Tensor, device: Device) -> Result<Tensor> {
    move_tensor(&mut t, device)?;
    Ok(t)
}

/// Moves every parameter (value and gradient) and buffer of `model` to `device`.
///
/// # Errors
/// The first failed copy, naming the tensor.
pub fn params_to_device(model: &mut (impl Parameters + ?Sized), device: Device) -> Result<()> {
    let mut result = Ok(());
    model.visit_params("", &mut |_, p| {
        if result.is_ok() {
            result = move_tensor(&mut p.value, device).and(move_tensor(&mut p.grad, device));
        }
    });
    model.visit_buffers("", &mut |_, t| {
        if result.is_ok() {
            result = move_tensor(t, device);
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{Linear, Mode, Param};

    #[test]
    fn emu_layer_state_moves_and_the_layer_runs_there() {
        let mut fc = Linear::new(3, 2, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        fc.weight =
            Param::new(Tensor::from_vec([2, 3], vec![1.0, 0.0, -1.0, 2.0, 1.0, 0.5]).unwrap());
        params_to_device(&mut fc, Device::CudaEmu).unwrap();
        assert_eq!(fc.weight.value.device(), Device::CudaEmu);
        assert_eq!(fc.weight.grad.device(), Device::CudaEmu);
        let x = Tensor::from_vec([1, 3], vec![1.0, 2.0, 4.0]).unwrap();
        let e = fc.forward(x.clone(), Mode::Train).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: b is on cuda-emu, the other tensors on cpu"
        );
        let x = kernels::cuda::to_device(&x, Device::CudaEmu).unwrap();
        let (y, _) = fc.forward(x, Mode::Train).unwrap();
        assert_eq!((y.device(), y.to_vec()), (Device::CudaEmu, vec![-3.0, 6.0]));
        params_to_device(&mut fc, Device::Cpu).unwrap();
        assert_eq!(fc.weight.value.device(), Device::Cpu);
    }
}
