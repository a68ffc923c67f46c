//! Batch norm on the CPU: per-channel sums in a fixed order (f64, [`LANES`] interleaved
//! accumulators), rayon over channels for the sums and over samples for the elementwise passes.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::lanes_x86;
use super::{BatchNormConfig, StatsSource};
use crate::relu::cpu::relu;
use crate::simd::{self, multiversion, Isa};

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

    /// The runs of channel `ch`, one per sample, in sample order (of x, dy, or a byte mask of
    /// their shape).
    #[inline(always)]
    fn runs<'a, T>(&self, v: &'a [T], ch: usize) -> impl Iterator<Item = &'a [T]> {
        let (c, inner) = (self.c, self.inner);
        (0..self.n).map(move |s| &v[(s * c + ch) * inner..][..inner])
    }
}

/// Independent f64 accumulators per sum: enough to hide the latency of an add and fill the
/// vector registers. Value i of a run (one sample's values of one channel) goes to accumulator
/// i % LANES, runs in sample order, and the accumulators are added in lane order at the end: a
/// fixed order, so the sums do not depend on the thread count.
pub(super) const LANES: usize = 16;

/// A chunk of [`LANES`] values as an array, its length known to the compiler.
#[inline(always)]
fn lanes<T>(chunk: &[T]) -> &[T; LANES] {
    chunk.try_into().expect("chunks of LANES values")
}

/// K sums over the values of one channel, each split over [`LANES`] accumulators.
struct LaneSums<const K: usize> {
    acc: [[f64; LANES]; K],
}

impl<const K: usize> LaneSums<K> {
    #[inline(always)]
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
            self.add_lanes(lanes(ca), lanes(cb), &f);
        }
        for (l, (&va, &vb)) in ga.remainder().iter().zip(gb.remainder()).enumerate() {
            self.add_one(l, f(va as f64, vb as f64));
        }
    }

    /// [`LaneSums::add_run`] with a[i] read as 0 where gate[i] is 0: the ReLU's backward
    /// (dy where its input was > 0, else 0) folded into the read of a.
    #[inline(always)]
    fn add_gated_run(
        &mut self,
        a: &[f32],
        gate: &[u8],
        b: &[f32],
        f: impl Fn(f64, f64) -> [f64; K],
    ) {
        let (mut ga, mut gm, mut gb) = (
            a.chunks_exact(LANES),
            gate.chunks_exact(LANES),
            b.chunks_exact(LANES),
        );
        for ((ca, cm), cb) in (&mut ga).zip(&mut gm).zip(&mut gb) {
            let (ca, cm) = (lanes(ca), lanes(cm));
            let ca: [f32; LANES] = std::array::from_fn(|l| gated(ca[l], cm[l]));
            self.add_lanes(&ca, lanes(cb), &f);
        }
        let rest = ga
            .remainder()
            .iter()
            .zip(gm.remainder())
            .zip(gb.remainder());
        for (l, ((&va, &m), &vb)) in rest.enumerate() {
            self.add_one(l, f(gated(va, m) as f64, vb as f64));
        }
    }

    /// Adds f(a[l], b[l]) to lane l of each sum, for every lane. (The plain form, for CPUs
    /// without AVX2; the compiler does not vectorise it: `lanes_x86` holds the vector form of
    /// these same additions.)
    #[inline(always)]
    fn add_lanes(&mut self, a: &[f32; LANES], b: &[f32; LANES], f: &impl Fn(f64, f64) -> [f64; K]) {
        for l in 0..LANES {
            self.add_one(l, f(a[l] as f64, b[l] as f64));
        }
    }

    /// Adds the K terms t to lane l.
    #[inline(always)]
    fn add_one(&mut self, l: usize, t: [f64; K]) {
        for (acc, t) in self.acc.iter_mut().zip(t) {
            acc[l] += t;
        }
    }
}

/// The K totals of K sums' lanes, each added in lane order.
fn totals<const K: usize>(acc: &[[f64; LANES]; K]) -> [f64; K] {
    acc.map(|lanes| lanes.iter().sum())
}

/// Per channel (mean, biased variance) in f64, in one pass over x.
///
/// The sums are shifted by the channel's first value k: s1 = sum(x - k), s2 = sum((x - k)^2),
/// then mean = k + s1/M and var = s2/M - (s1/M)^2. Shifting by a value of the data keeps the
/// subtraction from cancelling (the textbook sum(x^2) - M mean^2 loses every digit when
/// |mean| >> std); the error left is about 1e-16 * (1 + (mean - k)^2 / var) relative, where the
/// two-pass form read x twice.
pub(super) fn channel_moments(x: &[f32], d: Dims) -> Vec<(f64, f64)> {
    let isa = simd::isa();
    (0..d.c)
        .into_par_iter()
        .map(|ch| channel_moment(isa, x, d, ch))
        .collect()
}

/// (mean, biased variance) of channel `ch`, for [`channel_moments`]: the lane sums in `isa`'s
/// registers (`lanes_x86`) or in plain Rust ([`LaneSums`]), the same additions either way.
fn channel_moment(isa: Isa, x: &[f32], d: Dims, ch: usize) -> (f64, f64) {
    let m = d.per_channel() as f64;
    let k = x[ch * d.inner] as f64;
    let lanes = match isa {
        // SAFETY: `isa` is available on this CPU (`simd::isa`, or a test that asks
        // `Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { lanes_x86::moment_avx512(x, d, ch, k) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { lanes_x86::moment_avx2(x, d, ch, k) },
        _ => {
            let mut sums = LaneSums::<2>::new();
            for run in d.runs(x, ch) {
                sums.add_run(run, run, |v, _| {
                    let e = v - k;
                    [e, e * e]
                });
            }
            sums.acc
        }
    };
    let [s1, s2] = totals(&lanes);
    let shift = s1 / m;
    (k + shift, (s2 / m - shift * shift).max(0.0))
}

/// What [`normalize`] does to each value after the normalisation, in the same pass.
pub(super) enum Then<'a> {
    /// Nothing: y = gamma (x - mean) inv_std + beta.
    Identity,
    /// y = relu(...), as `relu::relu_forward_in_place` would make it (a NaN stays NaN).
    Relu,
    /// y = relu(...), and mask[i] = 1 where the normalised value was > 0, else 0: the byte mask
    /// of `relu::relu_forward_in_place`.
    ReluMask(&'a mut [u8]),
}

impl<'a> Then<'a> {
    /// [`Then::ReluMask`] into `keep`, resized to `len` bytes, with `relu`; else
    /// [`Then::Identity`].
    pub(super) fn relu_mask_if(relu: bool, keep: &'a mut Vec<u8>, len: usize) -> Then<'a> {
        if relu {
            keep.resize(len, 0);
            Then::ReluMask(keep)
        } else {
            Then::Identity
        }
    }
}

/// y = gamma * (x - mean) * inv_std + beta, per channel, followed by `then`.
#[allow(clippy::too_many_arguments)]
pub(super) fn normalize(
    y: &mut [f32],
    x: &[f32],
    d: Dims,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    then: Then<'_>,
) {
    let sample = d.c * d.inner;
    let isa = simd::isa();
    let coef: Vec<(f32, f32, f32)> = (0..d.c)
        .map(|ch| (mean[ch], gamma[ch] * inv_std[ch], beta[ch]))
        .collect();
    let (ys, xs) = (y.par_chunks_mut(sample), x.par_chunks(sample));
    match then {
        Then::Identity => ys
            .zip(xs)
            .for_each(|(ys, xs)| normalize_sample(isa, ys, xs, d.inner, &coef)),
        Then::Relu => ys
            .zip(xs)
            .for_each(|(ys, xs)| normalize_relu_sample(isa, ys, xs, d.inner, &coef)),
        Then::ReluMask(mask) => ys
            .zip(xs)
            .zip(mask.par_chunks_mut(sample))
            .for_each(|((ys, xs), ms)| normalize_relu_mask_sample(isa, ys, xs, ms, d.inner, &coef)),
    }
}

multiversion! {
    /// [`normalize_sample_impl`] compiled for `isa`.
    fn normalize_sample = normalize_sample_impl(
        ys: &mut [f32],
        xs: &[f32],
        inner: usize,
        coef: &[(f32, f32, f32)],
    )
}

multiversion! {
    /// [`normalize_relu_sample_impl`] compiled for `isa`.
    fn normalize_relu_sample = normalize_relu_sample_impl(
        ys: &mut [f32],
        xs: &[f32],
        inner: usize,
        coef: &[(f32, f32, f32)],
    )
}

multiversion! {
    /// [`normalize_relu_mask_sample_impl`] compiled for `isa`.
    fn normalize_relu_mask_sample = normalize_relu_mask_sample_impl(
        ys: &mut [f32],
        xs: &[f32],
        ms: &mut [u8],
        inner: usize,
        coef: &[(f32, f32, f32)],
    )
}

/// One sample of [`normalize`]: coef[ch] = (mean, gamma inv_std, beta).
#[inline(always)]
fn normalize_sample_impl(ys: &mut [f32], xs: &[f32], inner: usize, coef: &[(f32, f32, f32)]) {
    normalize_rows(ys, xs, inner, coef, |z| z);
}

/// One sample of [`normalize`] with [`Then::Relu`].
#[inline(always)]
fn normalize_relu_sample_impl(ys: &mut [f32], xs: &[f32], inner: usize, coef: &[(f32, f32, f32)]) {
    normalize_rows(ys, xs, inner, coef, relu);
}

/// y = then((x - mean) * scale + shift) over one sample's channels (rows of `inner` values).
#[inline(always)]
fn normalize_rows(
    ys: &mut [f32],
    xs: &[f32],
    inner: usize,
    coef: &[(f32, f32, f32)],
    then: impl Fn(f32) -> f32,
) {
    for ((yr, xr), &(mu, scale, shift)) in ys
        .chunks_exact_mut(inner)
        .zip(xs.chunks_exact(inner))
        .zip(coef)
    {
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = then((v - mu) * scale + shift);
        }
    }
}

/// One sample of [`normalize`] with [`Then::ReluMask`].
#[inline(always)]
fn normalize_relu_mask_sample_impl(
    ys: &mut [f32],
    xs: &[f32],
    ms: &mut [u8],
    inner: usize,
    coef: &[(f32, f32, f32)],
) {
    for (((yr, xr), mr), &(mu, scale, shift)) in ys
        .chunks_exact_mut(inner)
        .zip(xs.chunks_exact(inner))
        .zip(ms.chunks_exact_mut(inner))
        .zip(coef)
    {
        for ((o, &v), m) in yr.iter_mut().zip(xr).zip(mr) {
            let z = (v - mu) * scale + shift;
            *m = (z > 0.0) as u8;
            *o = relu(z);
        }
    }
}

/// g where the ReLU after the batch norm let its input through (gate 1), else 0: exactly what
/// `relu::relu_backward_in_place` writes.
/// (A gate of 1 is all ones as a u32 mask, 0 all zeros: the bits of g or of +0.0, an AND of the
/// bits as `lanes_x86` does it in vectors, so the two agree for any byte.)
#[inline(always)]
pub(super) fn gated(g: f32, gate: u8) -> f32 {
    debug_assert!(gate <= 1, "a ReLU mask holds 0 or 1");
    f32::from_bits(g.to_bits() & 0u32.wrapping_sub(gate as u32))
}

/// The gradient a backward reads: dy itself, or, when a ReLU followed the batch norm, dy and
/// that ReLU's byte mask (1 where its input was > 0), the ReLU's backward folded into the reads.
#[derive(Clone, Copy)]
pub(super) struct Upstream<'a> {
    pub dy: &'a [f32],
    pub relu_mask: Option<&'a [u8]>,
}

/// Per channel (sum dy, sum dy * x_hat), in f64, one pass over dy and x:
/// sum dy * x_hat = inv_std * sum dy * (x - mean).
pub(super) fn channel_grad_sums(
    up: Upstream<'_>,
    x: &[f32],
    d: Dims,
    mean: &[f32],
    inv_std: &[f32],
) -> Vec<(f64, f64)> {
    let isa = simd::isa();
    (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let (sum_dy, sum_dy_xc) = channel_grad_sum(isa, up, x, d, mean[ch] as f64, ch);
            (sum_dy, sum_dy_xc * inv_std[ch] as f64)
        })
        .collect()
}

/// (sum dy, sum dy (x - mu)) of channel `ch`, for [`channel_grad_sums`]: in `isa`'s registers
/// or in plain Rust, as [`channel_moment`].
fn channel_grad_sum(
    isa: Isa,
    up: Upstream<'_>,
    x: &[f32],
    d: Dims,
    mu: f64,
    ch: usize,
) -> (f64, f64) {
    let lanes = match isa {
        // SAFETY: `isa` is available on this CPU, as in `channel_moment`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { lanes_x86::grad_avx512(up.dy, up.relu_mask, x, d, ch, mu) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { lanes_x86::grad_avx2(up.dy, up.relu_mask, x, d, ch, mu) },
        _ => channel_grad_lanes(up, x, d, mu, ch),
    };
    let [sum_dy, sum_dy_xc] = totals(&lanes);
    (sum_dy, sum_dy_xc)
}

/// The lanes of [`channel_grad_sum`] in plain Rust.
fn channel_grad_lanes(
    up: Upstream<'_>,
    x: &[f32],
    d: Dims,
    mu: f64,
    ch: usize,
) -> [[f64; LANES]; 2] {
    let mut sums = LaneSums::<2>::new();
    let term = |g: f64, v: f64| [g, g * (v - mu)];
    match up.relu_mask {
        None => {
            for (g, v) in d.runs(up.dy, ch).zip(d.runs(x, ch)) {
                sums.add_run(g, v, term);
            }
        }
        Some(mask) => {
            let runs = d.runs(up.dy, ch).zip(d.runs(mask, ch));
            for ((g, m), v) in runs.zip(d.runs(x, ch)) {
                sums.add_gated_run(g, m, v, term);
            }
        }
    }
    sums.acc
}

/// One channel's (gamma inv_std, mean of dy, mean of dy x_hat) in [`input_grad`].
type GradCoef = (f32, f32, f32);

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
pub(super) fn input_grad(dx: &mut [f32], up: Upstream<'_>, x: &[f32], d: Dims, s: Saved<'_>) {
    let m = d.per_channel() as f64;
    // Per channel: scale = gamma * inv_std, and the two subtracted means (0 for running stats).
    let coef: Vec<GradCoef> = (0..d.c)
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
    let isa = simd::isa();
    let stats: Vec<(f32, f32)> = (0..d.c).map(|ch| (s.mean[ch], s.inv_std[ch])).collect();
    let per_channel = (&coef[..], &stats[..]);
    let (dxs, dys, xs) = (
        dx.par_chunks_mut(sample),
        up.dy.par_chunks(sample),
        x.par_chunks(sample),
    );
    match up.relu_mask {
        None => dxs.zip(dys.zip(xs)).for_each(|(dxs, (dys, xs))| {
            input_grad_sample(isa, dxs, (dys, xs), d.inner, per_channel)
        }),
        Some(mask) => {
            dxs.zip(dys.zip(mask.par_chunks(sample)).zip(xs))
                .for_each(|(dxs, ((dys, ms), xs))| {
                    input_grad_gated_sample(isa, dxs, (dys, ms, xs), d.inner, per_channel)
                })
        }
    }
}

/// A layer's running averages, (C,) each, updated by a training forward.
pub(super) struct Running<'a> {
    pub mean: &'a mut [f32],
    pub var: &'a mut [f32],
}

/// The training forward: y = gamma (x - mean) inv_std + beta with the batch's statistics, which
/// it returns as (mean, inv_std), (C,) each; the running averages move towards them, the
/// variance times [`RunningVariance::factor`](super::RunningVariance::factor) (M / (M - 1) when
/// unbiased). M >= 2 values per channel. `then` follows the normalisation in the same pass.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_train(
    y: &mut [f32],
    x: &[f32],
    d: Dims,
    gamma: &[f32],
    beta: &[f32],
    running: Running<'_>,
    cfg: &BatchNormConfig,
    then: Then<'_>,
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
    normalize(y, x, d, &mean, &inv_std, gamma, beta, then);
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
    up: Upstream<'_>,
    x: &[f32],
    d: Dims,
    n: Normalized<'_>,
) {
    let sums = channel_grad_sums(up, x, d, n.mean, n.inv_std);
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
    input_grad(dx, up, x, d, saved);
}

multiversion! {
    /// [`input_grad_sample_impl`] compiled for `isa`.
    fn input_grad_sample = input_grad_sample_impl(
        dxs: &mut [f32],
        dy_x: (&[f32], &[f32]),
        inner: usize,
        per_channel: (&[GradCoef], &[(f32, f32)]),
    )
}

multiversion! {
    /// [`input_grad_gated_sample_impl`] compiled for `isa`.
    fn input_grad_gated_sample = input_grad_gated_sample_impl(
        dxs: &mut [f32],
        dy_mask_x: (&[f32], &[u8], &[f32]),
        inner: usize,
        per_channel: (&[GradCoef], &[(f32, f32)]),
    )
}

/// [`input_grad_sample_impl`] of dy gated by the ReLU mask (see [`gated`]).
#[inline(always)]
fn input_grad_gated_sample_impl(
    dxs: &mut [f32],
    (dys, ms, xs): (&[f32], &[u8], &[f32]),
    inner: usize,
    (coef, stats): (&[GradCoef], &[(f32, f32)]),
) {
    for ((((o, g), m), v), (&(scale, mean_dy, mean_dy_xhat), &(mu, inv))) in dxs
        .chunks_exact_mut(inner)
        .zip(dys.chunks_exact(inner))
        .zip(ms.chunks_exact(inner))
        .zip(xs.chunks_exact(inner))
        .zip(coef.iter().zip(stats))
    {
        for (((o, &g), &m), &v) in o.iter_mut().zip(g).zip(m).zip(v) {
            let x_hat = (v - mu) * inv;
            *o = scale * (gated(g, m) - mean_dy - x_hat * mean_dy_xhat);
        }
    }
}

/// One sample of [`input_grad`]: per channel (gamma inv_std, mean dy, mean dy x_hat) and
/// (mean, inv_std).
#[inline(always)]
fn input_grad_sample_impl(
    dxs: &mut [f32],
    (dys, xs): (&[f32], &[f32]),
    inner: usize,
    (coef, stats): (&[GradCoef], &[(f32, f32)]),
) {
    for (((o, g), v), (&(scale, mean_dy, mean_dy_xhat), &(mu, inv))) in dxs
        .chunks_exact_mut(inner)
        .zip(dys.chunks_exact(inner))
        .zip(xs.chunks_exact(inner))
        .zip(coef.iter().zip(stats))
    {
        for ((o, &g), &v) in o.iter_mut().zip(g).zip(v) {
            let x_hat = (v - mu) * inv;
            *o = scale * (g - mean_dy - x_hat * mean_dy_xhat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // Runs of 37 values (two chunks of the lanes and a remainder), of 16 (one chunk), and
        // of 1 ((N, F) rows: remainders only).
        for (n, c, inner) in [(3, 5, 37), (2, 3, 16), (9, 4, 1)] {
            same_bits_on_every_instruction_set(Dims { n, c, inner });
        }
    }

    fn same_bits_on_every_instruction_set(d: Dims) {
        let len = d.n * d.c * d.inner;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.5)
            .collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let gate: Vec<u8> = (0..len).map(|i| (i % 3 != 1) as u8).collect();
        let coef: Vec<(f32, f32, f32)> = (0..d.c).map(|c| (0.1 * c as f32, 1.5, -0.25)).collect();
        let stats: Vec<(f32, f32)> = (0..d.c).map(|c| (0.2 * c as f32, 0.75)).collect();
        let run = |isa: Isa| {
            let moments: Vec<_> = (0..d.c).map(|ch| channel_moment(isa, &x, d, ch)).collect();
            let plain = Upstream {
                dy: &dy,
                relu_mask: None,
            };
            let gated_up = Upstream {
                dy: &dy,
                relu_mask: Some(&gate),
            };
            let grads: Vec<_> = (0..d.c)
                .map(|ch| channel_grad_sum(isa, plain, &x, d, 0.3, ch))
                .collect();
            let gated_grads: Vec<_> = (0..d.c)
                .map(|ch| channel_grad_sum(isa, gated_up, &x, d, 0.3, ch))
                .collect();
            let sample = d.c * d.inner;
            let mut y = vec![0.0; sample];
            normalize_sample(isa, &mut y, &x[..sample], d.inner, &coef);
            let mut y_relu = vec![0.0; sample];
            normalize_relu_sample(isa, &mut y_relu, &x[..sample], d.inner, &coef);
            let (mut y_mask, mut mask) = (vec![0.0; sample], vec![0u8; sample]);
            normalize_relu_mask_sample(isa, &mut y_mask, &x[..sample], &mut mask, d.inner, &coef);
            let mut dx = vec![0.0; sample];
            let dy_x = (&dy[..sample], &x[..sample]);
            input_grad_sample(isa, &mut dx, dy_x, d.inner, (&coef, &stats));
            let mut gated_dx = vec![0.0; sample];
            let dy_gate_x = (&dy[..sample], &gate[..sample], &x[..sample]);
            input_grad_gated_sample(isa, &mut gated_dx, dy_gate_x, d.inner, (&coef, &stats));
            let grads = (grads, gated_grads);
            (moments, grads, (y, y_relu, y_mask, mask), (dx, gated_dx))
        };
        let portable = run(Isa::Portable);
        for isa in Isa::available_all() {
            assert!(
                run(isa) == portable,
                "{isa} differs from the portable code, {d:?}"
            );
        }
    }
}
