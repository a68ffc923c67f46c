//! Data augmentation throughput on one core, in images/s.
//!
//! The seed's policy and the standard policy are timed per image through `augment_image`, which
//! is serial, on 1,000 synthetic images; the whole batch path (gather, augment, normalise to f32)
//! is timed for a batch of 250, and the seed's one-time sharpening for the 1,000 images, inside a
//! 1-thread rayon pool. Every figure is therefore one core's.
//!
//! Run: `cargo bench -p benches --bench augment`.

use std::time::Duration;

use cifar_data::augment::{augment_image, Image, ImageKey};
use cifar_data::format::IMAGE_BYTES;
use cifar_data::synth::{self, SynthConfig, SynthSplit};
use cifar_data::{make_batch, Augment, Preprocess, Split};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const IMAGES: usize = 1000;
const BATCH: usize = 250;

fn images() -> Vec<Image> {
    let cfg = SynthConfig {
        seed: 0,
        train: IMAGES,
        test: 1,
    };
    synth::generate(&cfg, SynthSplit::Train)
        .images
        .chunks_exact(IMAGE_BYTES)
        .map(|img| img.try_into().expect("IMAGE_BYTES per image"))
        .collect()
}

fn policies(c: &mut Criterion) {
    let src = images();
    let mut group = c.benchmark_group("augment");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(IMAGES as u64));
    for (name, policy) in [
        ("seed_1core", Augment::Seed),
        ("standard_1core", Augment::Standard),
    ] {
        let mut work = src.clone();
        let mut epoch = 0u64;
        group.bench_function(name, |bench| {
            bench.iter(|| {
                epoch += 1;
                for (index, (img, orig)) in work.iter_mut().zip(&src).enumerate() {
                    *img = *orig;
                    let key = ImageKey {
                        seed: 7,
                        epoch,
                        batch: index as u64 / BATCH as u64,
                        index: index as u64,
                    };
                    augment_image(img, policy, key);
                }
            })
        });
    }
    group.finish();

    let cfg = SynthConfig {
        seed: 0,
        train: IMAGES,
        test: 1,
    };
    let r = synth::generate(&cfg, SynthSplit::Train);
    let fine = r.fine.iter().map(|&l| u32::from(l)).collect();
    let split = Split::new(r.images, fine, None).expect("consistent synthetic split");
    let indices: Vec<usize> = (0..BATCH).map(|i| (i * 7) % IMAGES).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a 1-thread pool");
    let mut group = c.benchmark_group("batch");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("make_batch_250_seed_1core", |bench| {
        bench
            .iter(|| pool.install(|| make_batch(&split, &indices, Augment::Seed, 7, 1, 0).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("preprocess");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(IMAGES as u64));
    let mut images = split.images().to_vec();
    group.bench_function("sharpen_1core", |bench| {
        bench.iter(|| {
            images.copy_from_slice(split.images());
            pool.install(|| Preprocess::Sharpen.apply_to_images(&mut images).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
