//! The memory-bound layers of a step on the CPU: batch norm and its ReLU, forward and backward,
//! in GB/s of the tensors each pass must read and write at least.
//!
//! Shapes: the first stage of `tiny` at batch 100 (8 x 32 x 32, 3.3 MB per map: caches hold it)
//! and of `small` at batch 250 (32 x 32 x 32, 33 MB: it streams from memory). The backward pair
//! is timed both ways the trainer could run it: the ReLU's backward then the batch norm's
//! (`separate`), and the batch norm's with the ReLU's mask folded in (`fused`, what the trainer
//! runs).
//!
//! Run: `cargo bench -p benches --bench memory_bound`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kernels::batchnorm::{
    batchnorm_backward, batchnorm_relu_backward, batchnorm_relu_forward_train, BatchNormConfig,
};
use kernels::relu::relu_backward_in_place;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

fn batchnorm_relu(c: &mut Criterion) {
    for (name, dims) in [
        ("tiny_100x8x32x32", [100, 8, 32, 32]),
        ("small_250x32x32x32", [250, 32, 32, 32]),
    ] {
        let ch = dims[1];
        let len: usize = dims.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = Tensor::uniform(dims, -2.0, 2.0, &mut rng).unwrap();
        let dy = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let (gamma, beta) = (Tensor::full([ch], 1.5), Tensor::full([ch], 0.1));
        let (mut rm, mut rv) = (Tensor::zeros([ch]), Tensor::full([ch], 1.0));
        let cfg = BatchNormConfig::default();
        let mut y = Tensor::zeros(dims);
        let (stats, mask) =
            batchnorm_relu_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg)
                .unwrap();
        let (mut dx, mut dg, mut db) = (
            Tensor::zeros(dims),
            Tensor::zeros([ch]),
            Tensor::zeros([ch]),
        );

        let mut group = c.benchmark_group(format!("batchnorm_relu_{name}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        // Forward: x read twice (statistics, then normalisation), y written, a byte mask written.
        group.throughput(Throughput::Bytes((len * (4 + 4 + 4 + 1)) as u64));
        group.bench_function("forward_train", |b| {
            b.iter(|| {
                batchnorm_relu_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg)
                    .unwrap()
            })
        });
        // Backward: dy and x read twice (sums, then dx), the mask read, dx written.
        group.throughput(Throughput::Bytes((len * (4 * 4 + 1 + 4)) as u64));
        let mut gated = dy.clone();
        group.bench_function("backward_separate", |b| {
            b.iter(|| {
                gated
                    .as_mut_slice()
                    .unwrap()
                    .copy_from_slice(dy.as_slice().unwrap());
                relu_backward_in_place(&mut gated, &mask).unwrap();
                batchnorm_backward(&mut dx, &mut dg, &mut db, &gated, &x, &gamma, &stats).unwrap()
            })
        });
        group.bench_function("backward_fused", |b| {
            b.iter(|| {
                // The same copy as `separate` pays, so that the two differ by the ReLU's pass only.
                gated
                    .as_mut_slice()
                    .unwrap()
                    .copy_from_slice(dy.as_slice().unwrap());
                let (dx, dg, db) = (&mut dx, &mut dg, &mut db);
                batchnorm_relu_backward(dx, dg, db, &gated, &mask, &x, &gamma, &stats).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, batchnorm_relu);
criterion_main!(benches);
