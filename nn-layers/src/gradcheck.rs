//! Finite-difference gradient checks, used by every layer's tests.
//!
//! A layer maps x to y. We probe it with the scalar loss L = sum(y * r) for a fixed random r, so
//! dL/dy = r is what `backward` receives, and compare the gradients `backward` returns against
//! central differences (L(v + eps) - L(v - eps)) / (2 eps), perturbing one value at a time and
//! accumulating L in f64 so that the difference is not drowned in rounding.
//!
//! A layer's test sets up its layer, x and r, runs one forward and backward, and hands the rest
//! to a [`Probe`] ([`Probe::linear`] for a layer linear around the probe point,
//! [`Probe::composite`] for a block of many layers): [`Probe::assert_gradient`] for the input
//! gradient dx (or any one tensor's), [`Probe::assert_param_gradients`] for every parameter the
//! layer visits. The `_where_smooth` variants serve compositions of many layers, where some ReLU
//! kink or max-pool switch lies within a step of some coordinate.
//!
//! The `assert_` helpers panic, as `assert!` does, with a message naming the first coordinate out
//! of tolerance; they run on the CPU and panic on a tensor they cannot read there (a bug in the
//! test that calls them).

use tensor_core::Tensor;

use crate::Parameters;

/// How close an analytic gradient must be to the numeric one:
/// |analytic - numeric| <= atol + rtol * |numeric|.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

/// The probe loss sum(y * r), accumulated in f64.
///
/// # Panics
/// If the slices differ in length (a bug in the test that calls it).
pub fn probe_loss(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(y.len(), r.len(), "probe_loss: y and r differ in length");
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of `loss` around `v`, one coordinate at a time.
pub fn numeric_grad(v: &[f32], eps: f32, mut loss: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut x = v.to_vec();
    (0..v.len())
        .map(|i| {
            x[i] = v[i] + eps;
            let plus = loss(&x);
            x[i] = v[i] - eps;
            let minus = loss(&x);
            x[i] = v[i];
            // The step actually taken, as rounded in f32.
            let h = (v[i] + eps) as f64 - (v[i] - eps) as f64;
            (plus - minus) / h
        })
        .collect()
}

/// Compares an analytic gradient with a numeric one.
///
/// # Errors
/// A message naming `what`, the first index out of tolerance, both values and the count of
/// failures, for the test to panic with.
pub fn compare(
    what: &str,
    analytic: &[f32],
    numeric: &[f64],
    tol: Tolerance,
) -> Result<(), String> {
    if analytic.len() != numeric.len() {
        return Err(format!(
            "{what}: analytic gradient has {} values, numeric {}",
            analytic.len(),
            numeric.len()
        ));
    }
    let bad: Vec<usize> = (0..numeric.len())
        .filter(|&i| {
            let (a, n) = (analytic[i] as f64, numeric[i]);
            // Written so that a NaN on either side counts as a failure.
            let within = (a - n).abs() <= tol.atol + tol.rtol * n.abs();
            !within
        })
        .collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{what}: {} of {} gradients out of tolerance (atol {}, rtol {}); first at index {i}: \
             analytic {}, numeric {}",
            bad.len(),
            numeric.len(),
            tol.atol,
            tol.rtol,
            analytic[i],
            numeric[i]
        )),
    }
}

/// Central differences at `eps` and at `eps / 2`, for compositions of many layers where some
/// ReLU kink or max-pool switch inevitably lies within a step of some coordinate.
///
/// Where the two estimates disagree by more than `tol`, the loss is not smooth within `eps` of
/// that point and the coordinate is `None` (not checkable); elsewhere it is the `eps / 2` estimate.
/// A wrong analytic gradient is still caught: a smooth coordinate's two estimates agree with each
/// other, and both disagree with it.
pub fn numeric_grad_smooth(
    v: &[f32],
    eps: f32,
    tol: Tolerance,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Vec<Option<f64>> {
    let coarse = numeric_grad(v, eps, &mut loss);
    let fine = numeric_grad(v, eps / 2.0, &mut loss);
    coarse
        .iter()
        .zip(&fine)
        .map(|(&c, &f)| ((c - f).abs() <= tol.atol + tol.rtol * f.abs()).then_some(f))
        .collect()
}

/// [`compare`] on the coordinates [`numeric_grad_smooth`] could check, requiring that at least
/// `min_checked` of them (a fraction) were checkable. Returns how many were checked.
///
/// # Errors
/// As [`compare`], or a message if too few coordinates were smooth.
pub fn compare_where_smooth(
    what: &str,
    analytic: &[f32],
    numeric: &[Option<f64>],
    tol: Tolerance,
    min_checked: f64,
) -> Result<usize, String> {
    let (a, n): (Vec<f32>, Vec<f64>) = analytic
        .iter()
        .zip(numeric)
        .filter_map(|(&a, n)| n.map(|n| (a, n)))
        .unzip();
    if (a.len() as f64) < min_checked * numeric.len() as f64 {
        return Err(format!(
            "{what}: only {} of {} coordinates are smooth enough to check (need {:.0}%)",
            a.len(),
            numeric.len(),
            100.0 * min_checked
        ));
    }
    compare(what, &a, &n, tol).map(|()| a.len())
}

/// The values of a CPU tensor (gradient checks run on the CPU).
fn values(t: &Tensor) -> &[f32] {
    t.as_slice()
        .expect("gradient checks run on CPU tensors, contiguous")
}

/// `t`'s shape with other values.
fn reshaped_like(t: &Tensor, v: &[f32]) -> Tensor {
    Tensor::from_vec(t.shape().clone(), v.to_vec()).expect("as many values as the tensor has")
}

/// Step of [`Probe::linear`]: a layer linear around the probe point can take a large step.
pub const LINEAR_EPS: f32 = 1e-2;

/// Tolerance of [`Probe::linear`]. Around the probe point the layer is linear in x and in its
/// parameters (a convolution or a linear layer; dropout, DropBlock, ReLU and max-pool once the
/// test's inputs hold their masks, signs and winners fixed), so central differences are exact but
/// for the f32 rounding of the probe loss, about 1e-7 of values of order 1, which the division by
/// 2 [`LINEAR_EPS`] magnifies to about 1e-5. A wrong formula is off by order 1.
pub const LINEAR_TOL: Tolerance = Tolerance {
    atol: 1e-3,
    rtol: 1e-3,
};

/// Step of [`Probe::composite`]: batch norm over a small batch is strongly curved, so the step is
/// small.
pub const COMPOSITE_EPS: f32 = 1e-3;

/// Tolerance of [`Probe::composite`], for a composite of many layers in f32 (a residual block
/// chains fourteen). Its probe loss (tens of terms of order 1) carries about 1e-5 of rounding,
/// which central differences with [`COMPOSITE_EPS`] turn into about 5e-3 of noise on each numeric
/// gradient, hence the absolute tolerance; the curvature of batch norm over a batch of two to six
/// within the step, hence the relative one. A wrong formula is off by order 1 (the gradients are
/// of order 1).
pub const COMPOSITE_TOL: Tolerance = Tolerance {
    atol: 1e-2,
    rtol: 2e-2,
};

/// How closely the estimates at eps and eps / 2 must agree for a coordinate of a composite to
/// count as smooth ([`Probe::assert_gradient_where_smooth`]): tighter than [`COMPOSITE_TOL`], so that a
/// coordinate with a ReLU kink or a max-pool switch inside the step is left out rather than
/// compared with a numeric gradient that is off by a few percent.
pub const SMOOTH_TOL: Tolerance = Tolerance {
    atol: 5e-3,
    rtol: 5e-3,
};

/// At least this fraction of a composite's coordinates must be smooth within the step for its
/// check to count.
pub const MIN_SMOOTH: f64 = 0.9;

/// One gradient check's set-up: the probe r = dL/dy of L = sum(y * r), the finite-difference
/// step and the tolerance.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'r> {
    r: &'r Tensor,
    eps: f32,
    tol: Tolerance,
}

impl<'r> Probe<'r> {
    /// r: the shape of the layer's output y (it is also the dy given to `backward`).
    pub fn new(r: &'r Tensor, eps: f32, tol: Tolerance) -> Probe<'r> {
        Probe { r, eps, tol }
    }

    /// The probe of a layer linear around the probe point: [`LINEAR_EPS`], [`LINEAR_TOL`].
    pub fn linear(r: &'r Tensor) -> Probe<'r> {
        Probe::new(r, LINEAR_EPS, LINEAR_TOL)
    }

    /// The probe of a composite of many layers: [`COMPOSITE_EPS`], [`COMPOSITE_TOL`], for the
    /// `_where_smooth` checks with [`SMOOTH_TOL`] and [`MIN_SMOOTH`].
    pub fn composite(r: &'r Tensor) -> Probe<'r> {
        Probe::new(r, COMPOSITE_EPS, COMPOSITE_TOL)
    }

    /// The probe loss sum(y * r), accumulated in f64.
    pub fn loss(&self, y: &Tensor) -> f64 {
        probe_loss(values(y), values(self.r))
    }

    /// Asserts that `analytic`, the gradient of the probe loss with respect to `value` as a
    /// backward computed it, matches central differences of the probe loss of `forward` (the
    /// forward pass as a function of `value` alone), one coordinate at a time.
    ///
    /// # Panics
    /// With [`compare`]'s message, naming `what`, when a coordinate is out of tolerance.
    pub fn assert_gradient(
        &self,
        what: &str,
        value: &Tensor,
        analytic: &Tensor,
        mut forward: impl FnMut(Tensor) -> Tensor,
    ) {
        let numeric = numeric_grad(values(value), self.eps, |v| {
            self.loss(&forward(reshaped_like(value, v)))
        });
        compare(what, values(analytic), &numeric, self.tol).unwrap_or_else(|m| panic!("{m}"));
    }

    /// As [`Probe::assert_gradient`] on the coordinates where the estimates at `eps` and
    /// `eps / 2` agree within `smooth` (see [`numeric_grad_smooth`]), requiring that at least
    /// `min_checked` of them (a fraction) were. Returns how many were checked.
    ///
    /// # Panics
    /// With [`compare_where_smooth`]'s message, naming `what`.
    pub fn assert_gradient_where_smooth(
        &self,
        what: &str,
        value: &Tensor,
        analytic: &Tensor,
        smooth: Tolerance,
        min_checked: f64,
        mut forward: impl FnMut(Tensor) -> Tensor,
    ) -> usize {
        let numeric = numeric_grad_smooth(values(value), self.eps, smooth, |v| {
            self.loss(&forward(reshaped_like(value, v)))
        });
        compare_where_smooth(what, values(analytic), &numeric, self.tol, min_checked)
            .unwrap_or_else(|m| panic!("{m}"))
    }

    /// [`Probe::assert_gradient`] for every parameter of `layer`, whose gradients a backward has
    /// just accumulated: the numeric gradient of parameter i is taken through `forward` applied
    /// to a copy of `layer` with parameter i changed. Each is named `what: <parameter name>`.
    ///
    /// # Panics
    /// At the first parameter out of tolerance, as [`Probe::assert_gradient`].
    pub fn assert_param_gradients<L: Parameters + Clone>(
        &self,
        what: &str,
        layer: &mut L,
        mut forward: impl FnMut(&mut L) -> Tensor,
    ) {
        for (index, (name, value, grad)) in params(layer).into_iter().enumerate() {
            self.assert_gradient(&format!("{what}: {name}"), &value, &grad, |v| {
                forward(&mut with_param(layer, index, v))
            });
        }
    }

    /// [`Probe::assert_gradient_where_smooth`] for every parameter of `layer`, as
    /// [`Probe::assert_param_gradients`] takes them, with no share required of any one tensor
    /// (a batch norm's few scales may have no smooth coordinate at all). Returns (coordinates
    /// checked, coordinates in all), for the caller to require a share of the whole.
    ///
    /// # Panics
    /// At the first parameter out of tolerance, as [`Probe::assert_gradient`].
    pub fn assert_param_gradients_where_smooth<L: Parameters + Clone>(
        &self,
        what: &str,
        layer: &mut L,
        smooth: Tolerance,
        mut forward: impl FnMut(&mut L) -> Tensor,
    ) -> (usize, usize) {
        let (mut checked, mut total) = (0, 0);
        for (index, (name, value, grad)) in params(layer).into_iter().enumerate() {
            let what = format!("{what}: {name}");
            checked += self.assert_gradient_where_smooth(&what, &value, &grad, smooth, 0.0, |v| {
                forward(&mut with_param(layer, index, v))
            });
            total += value.len();
        }
        (checked, total)
    }
}

/// Every parameter of `layer` in visiting order: (name, value, gradient).
pub fn params<L: Parameters>(layer: &mut L) -> Vec<(String, Tensor, Tensor)> {
    let mut out = Vec::new();
    layer.visit_params("", &mut |name, p| {
        out.push((name.to_string(), p.value.clone(), p.grad.clone()))
    });
    out
}

/// A copy of `layer` with parameter number `index` (in visiting order) set to `value`.
pub fn with_param<L: Parameters + Clone>(layer: &L, index: usize, value: Tensor) -> L {
    let mut copy = layer.clone();
    let mut i = 0;
    let mut value = Some(value);
    copy.visit_params("", &mut |_, p| {
        if i == index {
            p.value = value.take().expect("one parameter has each index");
        }
        i += 1;
    });
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-3,
    };

    #[test]
    fn numeric_gradient_of_a_known_function() {
        // L(v) = sum(v^3), dL/dv = 3 v^2.
        let v = [0.5f32, -1.25, 2.0];
        let numeric = numeric_grad(&v, 1e-2, |x| x.iter().map(|&a| (a as f64).powi(3)).sum());
        let analytic: Vec<f32> = v.iter().map(|a| 3.0 * a * a).collect();
        compare("cube", &analytic, &numeric, TOL).unwrap();
    }

    #[test]
    fn a_wrong_gradient_is_reported() {
        let v = [0.5f32, -1.25, 2.0];
        let numeric = numeric_grad(&v, 1e-2, |x| x.iter().map(|&a| (a as f64).powi(3)).sum());
        let wrong: Vec<f32> = v.iter().map(|a| 2.0 * a * a).collect();
        let msg = compare("cube", &wrong, &numeric, TOL).unwrap_err();
        assert!(
            msg.starts_with("cube: 3 of 3 gradients out of tolerance"),
            "{msg}"
        );
    }
}
