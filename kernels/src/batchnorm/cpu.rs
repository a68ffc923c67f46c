//! Batch norm on the CPU: per-channel sums serial in a fixed order (f64), rayon over channels
//! for the sums and over samples for the elementwise passes.

use rayon::prelude::*;

use super::StatsSource;

/// x viewed as (n, c, inner): channel `ch` of sample `s` is the run
/// `x[(s * c + ch) * inner..][..inner]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub c: usize,
    pub inner: usize,
}

impl Dims {
    /// Values per channel, M = N*H*W.
    fn per_channel(&self) -> usize {
        self.n * self.inner
    }

    /// The runs of channel `ch`, one per sample, in sample order.
    fn runs<'a>(&self, v: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, inner) = (self.c, self.inner);
        (0..self.n).map(move |s| &v[(s * c + ch) * inner..][..inner])
    }
}

/// Per channel (mean, biased variance), two passes in f64.
pub(super) fn channel_moments(x: &[f32], d: Dims) -> Vec<(f64, f64)> {
    let m = d.per_channel() as f64;
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let mut sum = 0f64;
            for run in d.runs(x, ch) {
                for &v in run {
                    sum += v as f64;
                }
            }
            let mean = sum / m;
            let mut sq = 0f64;
            for run in d.runs(x, ch) {
                for &v in run {
                    let e = v as f64 - mean;
                    sq += e * e;
                }
            }
            (mean, sq / m)
        })
        .collect()
}

/// y = gamma * (x - mean) * inv_std + beta, per channel.
pub(super) fn normalize(
    y: &mut [f32],
    x: &[f32],
    d: Dims,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
) {
    let sample = d.c * d.inner;
    y.par_chunks_mut(sample)
        .zip(x.par_chunks(sample))
        .for_each(|(ys, xs)| {
            for ch in 0..d.c {
                let (mu, scale, shift) = (mean[ch], gamma[ch] * inv_std[ch], beta[ch]);
                let run = ch * d.inner..(ch + 1) * d.inner;
                for (o, &v) in ys[run.clone()].iter_mut().zip(&xs[run]) {
                    *o = (v - mu) * scale + shift;
                }
            }
        });
}

/// Per channel (sum dy, sum dy * x_hat), in f64.
pub(super) fn channel_grad_sums(
    dy: &[f32],
    x: &[f32],
    d: Dims,
    mean: &[f32],
    inv_std: &[f32],
) -> Vec<(f64, f64)> {
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let (mu, inv) = (mean[ch] as f64, inv_std[ch] as f64);
            let (mut sum_dy, mut sum_dy_xhat) = (0f64, 0f64);
            for (g, v) in d.runs(dy, ch).zip(d.runs(x, ch)) {
                for (&g, &v) in g.iter().zip(v) {
                    sum_dy += g as f64;
                    sum_dy_xhat += g as f64 * (v as f64 - mu) * inv;
                }
            }
            (sum_dy, sum_dy_xhat)
        })
        .collect()
}

/// What the input gradient needs besides dy and x, all per channel.
pub(super) struct Saved<'a> {
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub gamma: &'a [f32],
    /// (sum dy, sum dy * x_hat) from [`channel_grad_sums`].
    pub sums: &'a [(f64, f64)],
    pub source: StatsSource,
}

/// dx = gamma * inv_std * (dy - sum(dy)/M - x_hat * sum(dy x_hat)/M) for batch statistics,
/// dx = gamma * inv_std * dy for running ones; overwritten.
pub(super) fn input_grad(dx: &mut [f32], dy: &[f32], x: &[f32], d: Dims, s: Saved<'_>) {
    let m = d.per_channel() as f64;
    // Per channel: scale = gamma * inv_std, and the two subtracted means (0 for running stats).
    let coef: Vec<(f32, f32, f32)> = (0..d.c)
        .map(|ch| {
            let scale = s.gamma[ch] * s.inv_std[ch];
            match s.source {
                StatsSource::Batch => {
                    let (sum_dy, sum_dy_xhat) = s.sums[ch];
                    (scale, (sum_dy / m) as f32, (sum_dy_xhat / m) as f32)
                }
                StatsSource::Running => (scale, 0.0, 0.0),
            }
        })
        .collect();
    let sample = d.c * d.inner;
    dx.par_chunks_mut(sample)
        .zip(dy.par_chunks(sample).zip(x.par_chunks(sample)))
        .for_each(|(dxs, (dys, xs))| {
            for (ch, &(scale, mean_dy, mean_dy_xhat)) in coef.iter().enumerate() {
                let (mu, inv) = (s.mean[ch], s.inv_std[ch]);
                let run = ch * d.inner..(ch + 1) * d.inner;
                for ((o, &g), &v) in dxs[run.clone()]
                    .iter_mut()
                    .zip(&dys[run.clone()])
                    .zip(&xs[run])
                {
                    let x_hat = (v - mu) * inv;
                    *o = scale * (g - mean_dy - x_hat * mean_dy_xhat);
                }
            }
        });
}
