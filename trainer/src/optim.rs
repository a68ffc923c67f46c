//! The optimizer: clipping by global norm, then Adam (TensorFlow 1 form) or SGD with momentum,
//! over every parameter of a model, with the state a checkpoint must keep.
//!
//! One [`Optimizer::step`] does, in this order:
//! 1. check every gradient is finite, naming the first parameter (in forward order) that is not
//!    (each gradient's sum of squares gathers in one [`SquareSums`] on the gradients' device, read
//!    to the host once: the step's only wait for a GPU);
//! 2. global norm = sqrt(sum over parameters of sum(g^2)), and g *= clip / max(norm, clip);
//! 3. the update rule on each parameter, with the learning rate of this step;
//! 4. zero the gradients for the next step.

use clap::ValueEnum;
use kernels::adam::{adam_update_scaled_and_zero, Adam};
use kernels::grad_norm::{clip_factor, global_norm, scale_in_place, SquareSums};
use kernels::sgd::{sgd_update, Sgd};
use nn_layers::{Param, Parameters};
use serde::{Deserialize, Serialize};
use tensor_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The update rule (`--optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam in TensorFlow 1's form, as the seed.
    Adam,
    /// Stochastic gradient descent with momentum (optionally Nesterov) and weight decay.
    Sgd,
}

/// The update rule and its hyper-parameters (the learning rate is given per step), as a run's
/// settings hold them (`[optimizer.rule]` of `config.toml`). The kernels compute in f32: each
/// value is rounded to f32 once, when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpdateRule {
    /// Adam, TensorFlow 1 form (the update is [`kernels::adam`]'s).
    Adam {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
    },
    /// SGD with momentum; `weight_decay` is L2 added to the gradient (see [`kernels::sgd`]).
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
}

impl UpdateRule {
    pub fn kind(&self) -> OptimizerKind {
        match self {
            UpdateRule::Adam { .. } => OptimizerKind::Adam,
            UpdateRule::Sgd { .. } => OptimizerKind::Sgd,
        }
    }
}

/// Per-parameter state, in the model's parameter order.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// First and second moment estimates.
    Adam { m: Tensor, v: Tensor },
    /// The momentum buffer.
    Sgd { buf: Tensor },
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor the gradients were scaled by (1 when not clipped).
    pub clip_scale: f32,
}

/// The optimizer's state for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    pub rule: UpdateRule,
    slots: Vec<Slot>,
    /// Updates applied so far; Adam's bias correction uses `t = updates` after the increment.
    pub updates: u64,
}

impl Optimizer {
    /// Zero state for every parameter of `model`.
    pub fn new(rule: UpdateRule, model: &mut impl Parameters) -> Optimizer {
        let mut slots = Vec::new();
        model.visit_params("", &mut |_, p| {
            let zeros = || Tensor::zeros(p.value.shape().clone());
            slots.push(match rule {
                UpdateRule::Adam { .. } => Slot::Adam {
                    m: zeros(),
                    v: zeros(),
                },
                UpdateRule::Sgd { .. } => Slot::Sgd { buf: zeros() },
            });
        });
        Optimizer {
            rule,
            slots,
            updates: 0,
        }
    }

    /// Clips, updates every parameter of `model` with learning rate `lr`, and zeroes the gradients.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the first parameter whose gradient is NaN or infinite (nothing
    /// is updated then); a kernel error for a bad hyper-parameter.
    pub fn step(
        &mut self,
        model: &mut impl Parameters,
        lr: f32,
        clip_norm: f32,
    ) -> Result<StepReport> {
        let step = self.updates + 1;
        let sums = self.square_sums(model)?;
        if let Some(bad) = sums.iter().position(|s| !s.is_finite()) {
            return Err(Error::NonFinite {
                step,
                what: format!("the gradient of {}", param_name(model, bad)),
                value: sums[bad],
            });
        }
        let grad_norm = global_norm(&sums);
        let clip_scale = clip_factor(grad_norm, clip_norm)?;

        let rule = self.rule;
        let mut slots = self.slots.iter_mut();
        let mut result = Ok(());
        model.visit_params("", &mut |_, p| {
            if result.is_ok() {
                let slot = slots.next().expect("one slot per parameter, checked above");
                result = update(p, slot, rule, lr, clip_scale, step);
            }
        });
        result?;
        self.updates = step;
        Ok(StepReport {
            grad_norm,
            clip_scale,
        })
    }

    /// Each gradient's sum of squares, in parameter order: gathered in one [`SquareSums`] on the
    /// gradients' device and read once, so that on a GPU the step waits for the device once, not
    /// once per parameter.
    ///
    /// # Errors
    /// A model with another number of parameters than the state was made for; a kernel error.
    fn square_sums(&self, model: &mut impl Parameters) -> Result<Vec<f64>> {
        let mut params = 0;
        let mut device = Device::Cpu;
        model.visit_params("", &mut |_, p| {
            if params == 0 {
                device = p.grad.device();
            }
            params += 1;
        });
        if params != self.slots.len() {
            return Err(Error::invalid(
                "Optimizer::step",
                format!(
                    "the model has {params} parameters, the optimizer state {}",
                    self.slots.len()
                ),
            ));
        }
        let mut square_sums = SquareSums::new(device, params)?;
        let mut slot = 0;
        let mut result = Ok(());
        model.visit_params("", &mut |_, p| {
            if result.is_ok() {
                result = square_sums.set(slot, &p.grad);
            }
            slot += 1;
        });
        result?;
        Ok(square_sums.read()?)
    }

    /// Moves the optimizer state (Adam's moments, SGD's momentum) to `device`, where `model`'s
    /// parameters are (the state is named after them); both rules have CUDA kernels.
    ///
    /// # Errors
    /// The GPU cannot be opened or a copy fails.
    pub fn to_device(&mut self, model: &mut impl Parameters, device: Device) -> Result<()> {
        let mut result = Ok(());
        self.visit_state(model, &mut |_, t| {
            if result.is_ok() {
                result = nn_layers::move_tensor(t, device);
            }
        });
        Ok(result?)
    }

    /// Calls `f` on each state tensor with a checkpoint name derived from the parameter's:
    /// `optimizer.m.<name>` and `optimizer.v.<name>` for Adam, `optimizer.momentum.<name>` for SGD.
    pub fn visit_state(
        &mut self,
        model: &mut impl Parameters,
        f: &mut dyn FnMut(&str, &mut Tensor),
    ) {
        let mut names = Vec::with_capacity(self.slots.len());
        model.visit_params("", &mut |name, _| names.push(name.to_string()));
        for (name, slot) in names.iter().zip(&mut self.slots) {
            match slot {
                Slot::Adam { m, v } => {
                    f(&format!("optimizer.m.{name}"), m);
                    f(&format!("optimizer.v.{name}"), v);
                }
                Slot::Sgd { buf } => f(&format!("optimizer.momentum.{name}"), buf),
            }
        }
    }
}

/// The name of parameter `index` (in the model's visiting order).
fn param_name(model: &mut impl Parameters, index: usize) -> String {
    let mut i = 0;
    let mut found = String::new();
    model.visit_params("", &mut |name, _| {
        if i == index {
            found = name.to_string();
        }
        i += 1;
    });
    found
}

/// Scales the gradient by the clip factor, applies the rule, zeroes the gradient (for Adam in one
/// fused pass over the parameter, see [`adam_update_scaled_and_zero`]).
fn update(
    p: &mut Param,
    slot: &mut Slot,
    rule: UpdateRule,
    lr: f32,
    scale: f32,
    t: u64,
) -> Result<()> {
    match (rule, slot) {
        (
            UpdateRule::Adam {
                beta1,
                beta2,
                epsilon,
            },
            Slot::Adam { m, v },
        ) => {
            let cfg = Adam {
                lr,
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                epsilon: epsilon as f32,
            };
            adam_update_scaled_and_zero(&mut p.value, m, v, &mut p.grad, &cfg, t, scale)?;
        }
        (
            UpdateRule::Sgd {
                momentum,
                nesterov,
                weight_decay,
            },
            Slot::Sgd { buf },
        ) => {
            let cfg = Sgd {
                lr,
                momentum: momentum as f32,
                nesterov,
                weight_decay: weight_decay as f32,
            };
            if scale != 1.0 {
                scale_in_place(&mut p.grad, scale)?;
            }
            sgd_update(&mut p.value, buf, &p.grad, &cfg)?;
            p.zero_grad()?;
        }
        _ => unreachable!("slots are created for the optimizer's own rule"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two parameters, enough to see ordering, clipping and the update.
    struct Toy {
        a: Param,
        b: Param,
    }

    impl Parameters for Toy {
        fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
            f(&nn_layers::join(prefix, "a"), &mut self.a);
            f(&nn_layers::join(prefix, "b"), &mut self.b);
        }
    }

    fn toy(ga: [f32; 2], gb: f32) -> Toy {
        let mut a = Param::new(Tensor::from_vec([2], vec![1.0, 2.0]).unwrap());
        a.grad = Tensor::from_vec([2], ga.to_vec()).unwrap();
        let mut b = Param::new(Tensor::from_vec([1], vec![-1.0]).unwrap());
        b.grad = Tensor::from_vec([1], vec![gb]).unwrap();
        Toy { a, b }
    }

    const ADAM: UpdateRule = UpdateRule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };

    #[test]
    fn adam_first_step_moves_each_weight_by_about_lr() {
        let mut m = toy([0.3, -4.0], 2.0);
        let mut opt = Optimizer::new(ADAM, &mut m);
        let r = opt.step(&mut m, 0.01, 100.0).unwrap();
        assert_eq!(r.clip_scale, 1.0);
        assert!((r.grad_norm - (0.09f64 + 16.0 + 4.0).sqrt()).abs() < 1e-6);
        // Step 1 of Adam: m_hat / sqrt(v_hat) = sign(g), so w moves by lr against the gradient.
        let a = m.a.value.to_vec();
        assert!(
            (a[0] - 0.99).abs() < 1e-6 && (a[1] - 2.01).abs() < 1e-6,
            "{a:?}"
        );
        assert!((m.b.value.to_vec()[0] + 1.01).abs() < 1e-6);
        assert_eq!(m.a.grad.to_vec(), vec![0.0, 0.0], "gradients are zeroed");
        assert_eq!(opt.updates, 1);
    }

    #[test]
    fn gradients_are_clipped_by_their_global_norm() {
        // Norm 5 clipped to 1: SGD without momentum moves by lr * g / 5.
        let rule = UpdateRule::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut m = toy([3.0, 0.0], 4.0);
        let mut opt = Optimizer::new(rule, &mut m);
        let r = opt.step(&mut m, 1.0, 1.0).unwrap();
        assert!((r.grad_norm - 5.0).abs() < 1e-9);
        assert!((r.clip_scale - 0.2).abs() < 1e-7);
        assert!((m.a.value.to_vec()[0] - (1.0 - 0.6)).abs() < 1e-6);
        assert!((m.b.value.to_vec()[0] - (-1.0 - 0.8)).abs() < 1e-6);
    }

    #[test]
    fn a_non_finite_gradient_names_the_first_parameter_and_changes_nothing() {
        let mut m = toy([0.0, 1.0], f32::NAN);
        let mut opt = Optimizer::new(ADAM, &mut m);
        let err = opt.step(&mut m, 0.01, 100.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step 1: the gradient of b is not finite (NaN)"
        );
        assert_eq!(m.a.value.to_vec(), vec![1.0, 2.0]);
        assert_eq!(opt.updates, 0);
    }

    /// The toy with the gradients `ga` and `gb`, its parameters and gradients on `device`.
    fn toy_on(device: Device, ga: [f32; 2], gb: f32) -> Toy {
        let mut m = toy(ga, gb);
        nn_layers::params_to_device(&mut m, device).unwrap();
        m
    }

    /// Sets the gradients of a toy on any device.
    fn set_grads(m: &mut Toy, ga: [f32; 2], gb: f32) {
        let device = m.a.grad.device();
        m.a.grad =
            kernels::cuda::to_device(&Tensor::from_vec([2], ga.to_vec()).unwrap(), device).unwrap();
        m.b.grad =
            kernels::cuda::to_device(&Tensor::from_vec([1], vec![gb]).unwrap(), device).unwrap();
    }

    /// The device's update kernels may contract a * b + c into one rounding: a few ulps.
    const DEVICE_RTOL: f32 = 1e-6;

    /// Two steps of each rule, clipped and not, on the CPU and on the emulated device. The
    /// gradients' squares add up exactly (their global norm is 4.5), so whatever order the
    /// device sums them in, the reports are identical; the device is read once per step.
    #[test]
    fn emu_steps_read_the_device_once_and_match_the_cpu() {
        use kernels::cuda::emu::downloads_on_this_thread;
        let sgd = UpdateRule::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-2,
        };
        for rule in [ADAM, sgd] {
            for clip in [100.0, 1.0] {
                let mut cpu = toy_on(Device::Cpu, [0.5, -4.0], 2.0);
                let mut emu = toy_on(Device::CudaEmu, [0.5, -4.0], 2.0);
                let mut cpu_opt = Optimizer::new(rule, &mut cpu);
                let mut emu_opt = Optimizer::new(rule, &mut emu);
                emu_opt.to_device(&mut emu, Device::CudaEmu).unwrap();
                for grads in [([0.5, -4.0], 2.0), ([-2.0, 0.25], 0.5)] {
                    set_grads(&mut cpu, grads.0, grads.1);
                    set_grads(&mut emu, grads.0, grads.1);
                    let want = cpu_opt.step(&mut cpu, 0.01, clip).unwrap();
                    let before = downloads_on_this_thread();
                    let got = emu_opt.step(&mut emu, 0.01, clip).unwrap();
                    assert_eq!(downloads_on_this_thread() - before, 1, "{rule:?}");
                    assert_eq!(got, want, "{rule:?}, clip {clip}");
                }
                let (mut a, mut b) = (Vec::new(), Vec::new());
                cpu.visit_params("", &mut |_, p| a.extend(p.value.to_vec()));
                emu.visit_params("", &mut |_, p| b.extend(p.value.to_vec()));
                for (i, (c, e)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (c - e).abs() <= DEVICE_RTOL * c.abs(),
                        "{rule:?}, clip {clip}, value {i}: cpu {c}, emu {e}"
                    );
                }
                assert_eq!(emu.a.grad.to_vec(), vec![0.0, 0.0], "gradients are zeroed");
            }
        }
    }

    #[test]
    fn emu_a_non_finite_gradient_is_named_as_on_the_cpu() {
        let mut m = toy_on(Device::CudaEmu, [0.0, 1.0], f32::INFINITY);
        let mut opt = Optimizer::new(ADAM, &mut m);
        opt.to_device(&mut m, Device::CudaEmu).unwrap();
        let err = opt.step(&mut m, 0.01, 100.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "step 1: the gradient of b is not finite (inf)"
        );
        assert_eq!(m.a.value.to_vec(), vec![1.0, 2.0]);
        assert_eq!(opt.updates, 0);
    }

    #[test]
    fn state_is_named_after_the_parameters() {
        let mut m = toy([1.0, 1.0], 1.0);
        let mut opt = Optimizer::new(ADAM, &mut m);
        opt.step(&mut m, 0.01, 100.0).unwrap();
        let mut names = Vec::new();
        opt.visit_state(&mut m, &mut |n, t| names.push((n.to_string(), t.len())));
        assert_eq!(
            names,
            [
                ("optimizer.m.a".to_string(), 2),
                ("optimizer.v.a".to_string(), 2),
                ("optimizer.m.b".to_string(), 1),
                ("optimizer.v.b".to_string(), 1)
            ]
        );
    }
}
