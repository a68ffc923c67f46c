//! Epoch order, batch assembly, and the background loader: resume, errors, drop.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cifar_data::format::IMAGE_BYTES;
use cifar_data::{
    batch_at, epoch_order, make_batch, normalize, Augment, Batch, BatchLoader, Error, LastBatch,
    LoaderConfig, Order, Split,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn split(n: usize) -> Arc<Split> {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    ChaCha8Rng::seed_from_u64(1).fill(&mut images[..]);
    let fine = (0..n as u32).map(|i| i % 100).collect();
    let coarse = (0..n as u32).map(|i| i % 20).collect();
    Arc::new(Split::new(images, fine, Some(coarse)).unwrap())
}

/// Runs `f` on another thread and fails the test if it takes longer than 20 s: a hang shows up as
/// a failure, not as a stuck test run.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("hung for 20 s")
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(1000, Order::Shuffle, 7, 3);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(1000, Order::Shuffle, 7, 3));
    assert_ne!(a, epoch_order(1000, Order::Shuffle, 7, 4));
    assert_ne!(a, epoch_order(1000, Order::Shuffle, 8, 3));
    assert_eq!(epoch_order(5, Order::Sequential, 7, 3), vec![0, 1, 2, 3, 4]);
}

#[test]
fn fixed_order_is_one_shuffle_for_every_epoch() {
    let first = epoch_order(1000, Order::Fixed, 7, 0);
    assert_ne!(first, (0..1000).collect::<Vec<_>>(), "shuffled once");
    for epoch in [1, 2, 74] {
        assert_eq!(epoch_order(1000, Order::Fixed, 7, epoch), first);
    }
    assert_eq!(first, epoch_order(1000, Order::Shuffle, 7, 0));
    assert_ne!(first, epoch_order(1000, Order::Fixed, 8, 0), "seeded");
    assert_eq!(
        LoaderConfig::train(10, Augment::Seed, 1).order,
        Order::Fixed
    );
}

#[test]
fn fixed_order_visits_the_same_images_per_batch_but_augments_them_anew() {
    let s = split(40);
    let cfg = LoaderConfig::train(8, Augment::Seed, 4);
    let shuffle = LoaderConfig {
        order: Order::Shuffle,
        ..cfg
    };
    let (e0, e1) = (
        batch_at(&s, &cfg, 0, 2).unwrap(),
        batch_at(&s, &cfg, 1, 2).unwrap(),
    );
    assert_eq!(e0.indices, e1.indices);
    assert_ne!(
        e0.images, e1.images,
        "the augmentation is keyed by the epoch"
    );
    let (s0, s1) = (
        batch_at(&s, &shuffle, 0, 2).unwrap(),
        batch_at(&s, &shuffle, 1, 2).unwrap(),
    );
    assert_eq!(s0, e0, "epoch 0 is the same in both orders");
    assert_ne!(s1.indices, e1.indices);
}

#[test]
fn make_batch_gathers_labels_and_normalises() {
    let s = split(10);
    let batch = make_batch(&s, &[9, 2, 5], Augment::None, 0, 0, 4).unwrap();
    assert_eq!(batch.position, 4);
    assert_eq!(batch.images.dims(), &[3, 3, 32, 32]);
    assert_eq!(batch.fine, vec![9, 2, 5]);
    assert_eq!(batch.coarse, Some(vec![9, 2, 5]));
    assert_eq!(batch.indices, vec![9, 2, 5]);
    let x = batch.images.as_slice().unwrap();
    for (k, &i) in [9usize, 2, 5].iter().enumerate() {
        let want: Vec<f32> = s.image(i).iter().map(|&b| normalize(b)).collect();
        assert_eq!(&x[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES], &want[..]);
    }
    assert_eq!((normalize(0), normalize(255)), (-1.0, 1.0));
    assert!(matches!(
        make_batch(&s, &[10], Augment::None, 0, 0, 0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        make_batch(&s, &[], Augment::None, 0, 0, 0),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn last_batch_is_kept_or_dropped() {
    let s = split(23);
    for (last, sizes) in [
        (LastBatch::Keep, vec![10, 10, 3]),
        (LastBatch::Drop, vec![10, 10]),
    ] {
        let cfg = LoaderConfig {
            last,
            ..LoaderConfig::train(10, Augment::Standard, 1)
        };
        let got: Vec<usize> = BatchLoader::new(s.clone(), cfg, 0, 0)
            .unwrap()
            .map(|b| b.unwrap().fine.len())
            .collect();
        assert_eq!(got, sizes);
    }
}

#[test]
fn an_epoch_visits_every_image_once() {
    let s = split(57);
    let mut seen: Vec<usize> = BatchLoader::new(s, LoaderConfig::train(8, Augment::Seed, 3), 2, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().indices)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..57).collect::<Vec<_>>());
}

#[test]
fn a_resumed_loader_yields_what_an_uninterrupted_run_would() {
    let s = split(50);
    for order in [Order::Fixed, Order::Shuffle] {
        let cfg = LoaderConfig {
            order,
            ..LoaderConfig::train(7, Augment::Seed, 42)
        };
        let full: Vec<Batch> = BatchLoader::new(s.clone(), cfg, 5, 0)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(full.len(), 8);
        for start in [1, 3, 7] {
            let resumed: Vec<Batch> = BatchLoader::new(s.clone(), cfg, 5, start)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(&full[start..], &resumed[..], "{order:?} from batch {start}");
        }
        for (position, batch) in full.iter().enumerate() {
            assert_eq!(batch.position, position);
            assert_eq!(batch, &batch_at(&s, &cfg, 5, position).unwrap());
        }
        // A different epoch gives different batches; a different order only with Shuffle.
        let other = batch_at(&s, &cfg, 6, 0).unwrap();
        assert_ne!(other.images, full[0].images);
        assert_eq!(other.indices == full[0].indices, order == Order::Fixed);
    }
    let cfg = LoaderConfig::train(7, Augment::Seed, 42);
    // Starting exactly at the end is an empty epoch; past it is an error.
    assert_eq!(BatchLoader::new(s.clone(), cfg, 5, 8).unwrap().count(), 0);
    assert!(BatchLoader::new(s.clone(), cfg, 5, 9).is_err());
}

#[test]
fn the_same_seed_gives_the_same_batch_for_any_thread_count() {
    let s = split(40);
    let cfg = LoaderConfig::train(16, Augment::Seed, 9);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| batch_at(&s, &cfg, 1, 1).unwrap())
    };
    assert_eq!(run(1), run(2));
    let other_seed = LoaderConfig { seed: 10, ..cfg };
    assert_ne!(run(1), batch_at(&s, &other_seed, 1, 1).unwrap());
}

#[test]
fn a_panic_in_the_background_thread_is_an_error_not_a_hang() {
    let result = within_deadline(|| {
        let s = split(4);
        let loader = BatchLoader::from_fn(0..5, 2, move |position| {
            if position == 2 {
                panic!("synthetic failure at batch {position}");
            }
            make_batch(&s, &[position], Augment::None, 0, 0, position)
        })
        .unwrap();
        loader.map(|b| b.map(|b| b.indices)).collect::<Vec<_>>()
    });
    assert_eq!(result.len(), 3, "two batches, then the error, then the end");
    assert_eq!(result[0].as_ref().unwrap(), &vec![0]);
    assert_eq!(result[1].as_ref().unwrap(), &vec![1]);
    let msg = result[2].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("panicked") && msg.contains("synthetic failure at batch 2"),
        "{msg}"
    );
}

#[test]
fn an_error_in_the_background_thread_reaches_the_caller() {
    let result = within_deadline(|| {
        let s = split(4);
        // Index 9 is out of range for 4 images: make_batch returns Err at position 1.
        BatchLoader::from_fn(0..3, 1, move |position| {
            make_batch(&s, &[position * 9], Augment::None, 0, 0, position)
        })
        .unwrap()
        .collect::<Vec<_>>()
    });
    assert_eq!(result.len(), 2);
    assert!(result[0].is_ok());
    assert!(matches!(
        &result[1],
        Err(Error::Invalid {
            op: "make_batch",
            ..
        })
    ));
}

#[test]
fn dropping_the_loader_mid_epoch_does_not_hang() {
    within_deadline(|| {
        let s = split(200);
        let cfg = LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::train(4, Augment::Seed, 0)
        };
        let mut loader = BatchLoader::new(s, cfg, 0, 0).unwrap();
        let first = loader.next().unwrap().unwrap();
        assert_eq!(first.fine.len(), 4);
        assert_eq!(loader.remaining(), 49);
        // The producer is now blocked on a full channel; drop must release and join it.
        drop(loader);
    });
}

#[test]
fn bad_configurations_are_errors() {
    let s = split(3);
    let zero_batch = LoaderConfig::train(0, Augment::None, 0);
    assert!(matches!(
        BatchLoader::new(s.clone(), zero_batch, 0, 0),
        Err(Error::Invalid { .. })
    ));
    let zero_prefetch = LoaderConfig {
        prefetch: 0,
        ..LoaderConfig::eval(2)
    };
    assert!(BatchLoader::new(s.clone(), zero_prefetch, 0, 0).is_err());
    assert!(batch_at(&s, &LoaderConfig::eval(2), 0, 2).is_err());
}
