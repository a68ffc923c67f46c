//! Finite-difference gradient checks, used by every layer's tests.
//!
//! A layer maps x to y. We probe it with the scalar loss L = sum(y * r) for a fixed random r, so
//! dL/dy = r is what `backward` receives, and compare the gradients `backward` returns against
//! central differences (L(v + eps) - L(v - eps)) / (2 eps), perturbing one value at a time and
//! accumulating L in f64 so that the difference is not drowned in rounding.

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
