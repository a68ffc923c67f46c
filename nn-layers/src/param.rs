use tensor_core::Tensor;

/// A learnable tensor and the gradient accumulated for it by `backward`.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The current value.
    pub value: Tensor,
    /// d loss / d value, same shape; `backward` adds to it, the optimizer reads and zeroes it.
    pub grad: Tensor,
}

impl Param {
    /// Wraps `value` with a zero gradient of the same shape.
    pub fn new(value: Tensor) -> Param {
        let grad = Tensor::zeros(value.shape().clone());
        Param { value, grad }
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) -> crate::Result<()> {
        Ok(self.grad.fill(0.0)?)
    }
}

/// Anything that holds parameters: a layer, a block, the whole model.
///
/// Names are dotted paths built from `prefix` (`blocks.0.conv_block1.conv1.weight`), in the
/// layout of the equivalent PyTorch module, so checkpoints can be read by other tools.
pub trait Parameters {
    /// Calls `f` on each learnable parameter with its full name, always in the same order.
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param));

    /// Calls `f` on each non-learnable state tensor that a checkpoint must keep (batch-norm
    /// running statistics). The default has none.
    fn visit_buffers(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor)) {}
}

/// Joins a prefix and a name with a dot, leaving out an empty prefix.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
