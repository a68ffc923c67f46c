//! Batch norm on the CPU: per-channel sums in a fixed order (f64, [`LANES`] interleaved
//! accumulators), rayon over channels for the sums and over samples for the elementwise passes.

use rayon::prelude::*;

use super::{BatchNormConfig, StatsSource};

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

/// Independent f64 accumulators per sum: enough to hide the latency of an add and fill the
/// vector registers. Value i of a run (one sample's values of one channel) goes to accumulator
/// i % LANES, runs in sample order, and the accumulators are added in lane order at the end: a
/// fixed order, so the sums do not depend on the thread count.
const LANES: usize = 16;

/// K sums over the values of one channel, each split over [`LANES`] accumulators.
struct LaneSums<const K: usize> {
    acc: [[f64; LANES]; K],
}

impl<const K: usize> LaneSums<K> {
    fn new() -> Self {
        LaneSums {
            acc: [[0.0; LANES]; K],
        }
    }

    /// Adds the K terms f(a[i], b[i]) for every i of one run; a and b have the same length.
    #[inline(always)]
    fn add_run(&mut self, a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> [f64; K]) {
        let (mut ga, mut gb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (ca, cb) in (&mut ga).zip(&mut gb) {
            for l in 0..LANES {
                let t = f(ca[l] as f64, cb[l] as f64);
                for (acc, t) in self.acc.iter_mut().zip(t) {
                    acc[l] += t;
                }
            }
        }
        for (l, (&va, &vb)) in ga.remainder().iter().zip(gb.remainder()).enumerate() {
            let t = f(va as f64, vb as f64);
            for (acc, t) in self.acc.iter_mut().zip(t) {
                acc[l] += t;
            }
        }
    }

    /// The K totals, lanes added in order.
    fn totals(&self) -> [f64; K] {
        self.acc.map(|lanes| lanes.iter().sum())
    }
}

/// Per channel (mean, biased variance) in f64, in one pass over x.
///
/// The sums are shifted by the channel's first value k: s1 = sum(x - k), s2 = sum((x - k)^2),
/// then mean = k + s1/M and var = s2/M - (s1/M)^2. Shifting by a value of the data keeps the
/// subtraction from cancelling (the textbook sum(x^2) - M mean^2 loses every digit when
/// |mean| >> std); the error left is about 1e-16 * (1 + (mean - k)^2 / var) relative, where the
/// two-pass form read x twice.
pub(super) fn channel_moments(x: &[f32], d: Dims) -> Vec<(f64, f64)> {
    let m = d.per_channel() as f64;
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let k = x[ch * d.inner] as f64;
            let mut sums = LaneSums::<2>::new();
            for run in d.runs(x, ch) {
                sums.add_run(run, run, |v, _| {
                    let e = v - k;
                    [e, e * e]
                });
            }
            let [s1, s2] = sums.totals();
            let shift = s1 / m;
            (k + shift, (s2 / m - shift * shift).max(0.0))
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

/// Per channel (sum dy, sum dy * x_hat), in f64, one pass over dy and x:
/// sum dy * x_hat = inv_std * sum dy * (x - mean).
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
            let mu = mean[ch] as f64;
            let mut sums = LaneSums::<2>::new();
            for (g, v) in d.runs(dy, ch).zip(d.runs(x, ch)) {
                sums.add_run(g, v, |g, v| [g, g * (v - mu)]);
            }
            let [sum_dy, sum_dy_xc] = sums.totals();
            (sum_dy, sum_dy_xc * inv_std[ch] as f64)
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

/// A layer's running averages, (C,) each, updated by a training forward.
pub(super) struct Running<'a> {
    pub mean: &'a mut [f32],
    pub var: &'a mut [f32],
}

/// The training forward: y = gamma (x - mean) inv_std + beta with the batch's statistics, which
/// it returns as (mean, inv_std), (C,) each; the running averages move towards them, the
/// variance times [`RunningVariance::factor`](super::RunningVariance::factor) (M / (M - 1) when
/// unbiased). M >= 2 values per channel.
pub(super) fn forward_train(
    y: &mut [f32],
    x: &[f32],
    d: Dims,
    gamma: &[f32],
    beta: &[f32],
    running: Running<'_>,
    cfg: &BatchNormConfig,
) -> (Vec<f32>, Vec<f32>) {
    let m = d.per_channel();
    let moments = channel_moments(x, d);
    let (mut mean, mut inv_std) = (vec![0.0; d.c], vec![0.0; d.c]);
    let factor = cfg.running_variance.factor(m);
    let keep = cfg.momentum as f64;
    let (rm, rv) = (running.mean, running.var);
    for (c, &(mu, var)) in moments.iter().enumerate() {
        mean[c] = mu as f32;
        inv_std[c] = (1.0 / (var + cfg.eps as f64).sqrt()) as f32;
        rm[c] = (keep * rm[c] as f64 + (1.0 - keep) * mu) as f32;
        rv[c] = (keep * rv[c] as f64 + (1.0 - keep) * var * factor) as f32;
    }
    normalize(y, x, d, &mean, &inv_std, gamma, beta);
    (mean, inv_std)
}

/// 1 / sqrt(running_var + eps) per channel, in f64 rounded to f32: the evaluation forward's
/// inv_std. running_var: (C,), each >= 0.
pub(super) fn running_inv_std(running_var: &[f32], eps: f32) -> Vec<f32> {
    running_var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32)
        .collect()
}

/// What backward reads besides dy and x: gamma and the statistics the forward normalised with,
/// (C,) each, and which statistics they were.
pub(super) struct Normalized<'a> {
    pub gamma: &'a [f32],
    pub mean: &'a [f32],
    pub inv_std: &'a [f32],
    pub source: StatsSource,
}

/// Backward of either forward: dbeta += sum dy and dgamma += sum dy * x_hat per channel, then
/// dx (overwritten) by [`input_grad`].
pub(super) fn backward(
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: Dims,
    n: Normalized<'_>,
) {
    let sums = channel_grad_sums(dy, x, d, n.mean, n.inv_std);
    for (c, &(sum_dy, sum_dy_xhat)) in sums.iter().enumerate() {
        dbeta[c] += sum_dy as f32;
        dgamma[c] += sum_dy_xhat as f32;
    }
    let saved = Saved {
        mean: n.mean,
        inv_std: n.inv_std,
        gamma: n.gamma,
        sums: &sums,
        source: n.source,
    };
    input_grad(dx, dy, x, d, saved);
}
