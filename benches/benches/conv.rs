//! GEMM and conv2d throughput on the CPU, in FLOP/s.
//!
//! The 1024^3 SGEMM through the project's GEMM entry point is the yardstick, read at the start and
//! at the end (a drift shows the load changed). The conv2d passes run on the real 3x3 stride-1
//! SAME layers of the `seed` preset (batch 64; 3 -> 128 at 32x32, then C = K = 128, 256, 512, 1024
//! at 32, 16, 8, 4) and of the `small` preset (3 -> 32, then 32, 64, 128, 256), each pass by every
//! [`Conv2dAlgo`]: ids `direct_forward`, `winograd2_backward_data`, `winograd4_backward_weight`,
//! ... Winograd's FLOP/s count the direct convolution's arithmetic (an effective rate), so the
//! algorithms compare directly within one group. `Conv2dAlgo::choose` follows these figures.
//!
//! Run: `cargo bench -p benches --bench conv` (all, about 5 minutes on 2 cores), or a filter such
//! as `cargo bench -p benches --bench conv -- seed_n64_c512`.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use kernels::conv2d::{
    conv2d_backward_data_using, conv2d_backward_weight_using, conv2d_forward_using, Conv2dAlgo,
    Conv2dDims, Conv2dGeom,
};
use kernels::gemm::{sgemm, Operand};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

/// Ten samples of equal iteration counts (flat sampling: the slow passes take 0.1 to 0.5 s, and
/// criterion's default linear sampling would run them 55 times), after a short warm-up.
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
}

fn random(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::uniform(dims, -1.0, 1.0, rng).expect("valid bounds")
}

/// The yardstick: a 1024^3 SGEMM through the GEMM entry point, as `id`.
fn gemm_1024(c: &mut Criterion, id: &str) {
    const S: usize = 1024;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let a = random(&[S, S], &mut rng);
    let b = random(&[S, S], &mut rng);
    let mut out = vec![0.0f32; S * S];
    let mut group = c.benchmark_group("gemm");
    configure(&mut group);
    group.throughput(Throughput::Elements(2 * (S * S * S) as u64));
    group.bench_function(id, |bench| {
        bench.iter(|| {
            let (a, b) = (a.as_slice().unwrap(), b.as_slice().unwrap());
            sgemm(
                1.0,
                Operand::new(a, S, S),
                Operand::new(b, S, S),
                0.0,
                &mut out,
            )
            .unwrap();
        })
    });
    group.finish();
}

/// Forward, backward-data and backward-weight of a 3x3 SAME convolution from `cin` to `cout`
/// channels on a batch of `n` `side` x `side` maps, by every algorithm: ids `{algo}_{pass}`.
fn conv_passes(c: &mut Criterion, name: &str, n: usize, cin: usize, cout: usize, side: usize) {
    let geom = Conv2dGeom::SAME_3X3;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random(&[n, cin, side, side], &mut rng);
    let weight = random(&[cout, cin, 3, 3], &mut rng);
    let d = Conv2dDims::new("bench", x.dims(), weight.dims(), geom).unwrap();
    let dy = random(&d.y_dims(), &mut rng);
    let mut y = Tensor::zeros(d.y_dims());
    let mut dx = Tensor::zeros(d.x_dims());
    let mut dweight = Tensor::zeros(d.weight_dims());

    let mut group = c.benchmark_group(format!("conv2d_{name}"));
    configure(&mut group);
    group.throughput(Throughput::Elements(d.flops()));
    for algo in Conv2dAlgo::ALL {
        let (id, algo) = (algo.name(), Some(algo));
        group.bench_function(format!("{id}_forward"), |b| {
            b.iter(|| conv2d_forward_using(algo, &mut y, &x, &weight, geom).unwrap())
        });
        group.bench_function(format!("{id}_backward_data"), |b| {
            b.iter(|| conv2d_backward_data_using(algo, &mut dx, &dy, &weight, geom).unwrap())
        });
        group.bench_function(format!("{id}_backward_weight"), |b| {
            b.iter(|| conv2d_backward_weight_using(algo, &mut dweight, &dy, &x, geom).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    gemm_1024(c, "sgemm_1024");
    // The seed preset's layers at batch 64: the first convolution and one C = K convolution of
    // each residual block (the block's first, C -> K, costs the same as K -> K at half the C).
    conv_passes(c, "seed_first_n64_3to128_32x32", 64, 3, 128, 32);
    for (ch, side) in [(128, 32), (256, 16), (512, 8), (1024, 4)] {
        conv_passes(
            c,
            &format!("seed_n64_c{ch}_{side}x{side}"),
            64,
            ch,
            ch,
            side,
        );
    }
    // The small preset's (widths 32, 64, 128, 256).
    conv_passes(c, "small_first_n64_3to32_32x32", 64, 3, 32, 32);
    for (ch, side) in [(32, 32), (64, 16), (128, 8), (256, 4)] {
        conv_passes(
            c,
            &format!("small_n64_c{ch}_{side}x{side}"),
            64,
            ch,
            ch,
            side,
        );
    }
    // The yardstick again at the end: a drift between the two readings shows the machine's load
    // changed during the run.
    gemm_1024(c, "sgemm_1024_end");
}

criterion_group!(conv, benches);
criterion_main!(conv);
