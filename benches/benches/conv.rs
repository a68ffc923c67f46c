//! GEMM and conv2d throughput on the CPU, in FLOP/s.
//!
//! The 1024^3 SGEMM through the project's GEMM entry point is the yardstick; the conv2d passes on
//! the seed's block-1 shape (N=32, C=K=128, 32x32) and block-3 shape (N=32, C=K=512, 8x8), 3x3,
//! stride 1, SAME padding, are measured in the same run so their ratio to it is meaningful on a
//! shared, noisy machine. Each pass runs through both algorithms: the direct im2col path (ids
//! `forward`, `backward_data`, `backward_weight`) and Winograd F(2x2, 3x3) (ids prefixed
//! `winograd_`), whose FLOP/s count the direct convolution's arithmetic (an effective rate).
//! Block 4 (N=32, C=K=1024, 4x4) is where Winograd's tiles are fewest per image.
//!
//! Run: `cargo bench -p benches --bench conv`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use kernels::conv2d::{
    conv2d_backward_data_using, conv2d_backward_weight_using, conv2d_forward_using, Conv2dAlgo,
    Conv2dDims, Conv2dGeom,
};
use kernels::gemm::{sgemm, Operand};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
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

/// Forward, backward-data and backward-weight of a 3x3 SAME convolution from `ch` to `ch`
/// channels on a batch of 32 `side` x `side` maps.
fn conv_passes(c: &mut Criterion, name: &str, ch: usize, side: usize) {
    let geom = Conv2dGeom::SAME_3X3;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random(&[32, ch, side, side], &mut rng);
    let weight = random(&[ch, ch, 3, 3], &mut rng);
    let d = Conv2dDims::new("bench", x.dims(), weight.dims(), geom).unwrap();
    let dy = random(&d.y_dims(), &mut rng);
    let mut y = Tensor::zeros(d.y_dims());
    let mut dx = Tensor::zeros(d.x_dims());
    let mut dweight = Tensor::zeros(d.weight_dims());

    let mut group = c.benchmark_group(format!("conv2d_{name}"));
    configure(&mut group);
    group.throughput(Throughput::Elements(d.flops()));
    for (prefix, algo) in [
        ("", Conv2dAlgo::Direct),
        ("winograd_", Conv2dAlgo::Winograd),
    ] {
        let algo = Some(algo);
        group.bench_function(format!("{prefix}forward"), |b| {
            b.iter(|| conv2d_forward_using(algo, &mut y, &x, &weight, geom).unwrap())
        });
        group.bench_function(format!("{prefix}backward_data"), |b| {
            b.iter(|| conv2d_backward_data_using(algo, &mut dx, &dy, &weight, geom).unwrap())
        });
        group.bench_function(format!("{prefix}backward_weight"), |b| {
            b.iter(|| conv2d_backward_weight_using(algo, &mut dweight, &dy, &x, geom).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    gemm_1024(c, "sgemm_1024");
    conv_passes(c, "block1_n32_c128_32x32", 128, 32);
    conv_passes(c, "block3_n32_c512_8x8", 512, 8);
    conv_passes(c, "block4_n32_c1024_4x4", 1024, 4);
    // The yardstick again at the end: a drift between the two readings shows the machine's load
    // changed during the run.
    gemm_1024(c, "sgemm_1024_end");
}

criterion_group!(conv, benches);
criterion_main!(conv);
