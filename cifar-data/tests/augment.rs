//! Augmentation: exactness of each transform, dropout statistics, determinism.

use cifar_data::augment::{
    augment_batch, augment_image, augment_seed, batch_op_order, coarse_dropout, crop_resize,
    flip_horizontal, image_rng, pad_crop, Crop, Dropout, Image, ImageKey, MaskMode, SeedOp,
};
use cifar_data::format::{IMAGE_BYTES, PLANE, SIDE};
use cifar_data::Augment;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_image(seed: u64) -> Image {
    let mut img = [0u8; IMAGE_BYTES];
    ChaCha8Rng::seed_from_u64(seed).fill(&mut img[..]);
    img
}

fn px(img: &Image, c: usize, y: usize, x: usize) -> u8 {
    img[c * PLANE + y * SIDE + x]
}

#[test]
fn flip_is_an_exact_mirror() {
    let src = random_image(1);
    let mut img = src;
    flip_horizontal(&mut img);
    for c in 0..3 {
        for y in 0..SIDE {
            for x in 0..SIDE {
                assert_eq!(px(&img, c, y, x), px(&src, c, y, SIDE - 1 - x));
            }
        }
    }
    flip_horizontal(&mut img);
    assert_eq!(img, src);
}

#[test]
fn crop_of_zero_is_the_identity() {
    let src = random_image(2);
    let mut dst = [0u8; IMAGE_BYTES];
    crop_resize(&mut dst, &src, Crop::default()).unwrap();
    assert_eq!(dst, src);
}

#[test]
fn crop_resize_enlarges_the_cropped_region() {
    // A horizontal ramp x * 8 (red), constant elsewhere. Cropping 16 pixels off the right and
    // enlarging the left half to 32 columns by INTER_AREA repeats each source column twice
    // (scale 1/2: no output pixel straddles two source pixels).
    let mut src = [100u8; IMAGE_BYTES];
    for y in 0..SIDE {
        for x in 0..SIDE {
            src[y * SIDE + x] = (x * 8) as u8;
        }
    }
    let mut dst = [0u8; IMAGE_BYTES];
    let crop = Crop {
        right: 16,
        ..Crop::default()
    };
    crop_resize(&mut dst, &src, crop).unwrap();
    for x in 0..SIDE {
        assert_eq!(px(&dst, 0, 5, x), (x / 2 * 8) as u8, "column {x}");
    }
    assert!(
        dst[PLANE..].iter().all(|&v| v == 100),
        "constant planes stay constant"
    );
    // Cropping 8 rows off the top (scale 3/4 on y only) leaves every column's constant value
    // and copies the x axis exactly.
    let crop = Crop {
        top: 8,
        ..Crop::default()
    };
    crop_resize(&mut dst, &src, crop).unwrap();
    for y in 0..SIDE {
        for x in 0..SIDE {
            assert_eq!(px(&dst, 0, y, x), (x * 8) as u8, "({y}, {x})");
        }
    }
    // A crop that leaves nothing is refused.
    let bad = Crop {
        left: 20,
        right: 12,
        ..Crop::default()
    };
    assert!(crop_resize(&mut dst, &src, bad).is_err());
}

#[test]
fn pad_crop_shifts_and_fills_with_zeros() {
    let src = random_image(3);
    let mut dst = [0u8; IMAGE_BYTES];
    pad_crop(&mut dst, &src, 4, 4).unwrap();
    assert_eq!(dst, src, "the centred window is the identity");
    pad_crop(&mut dst, &src, 0, 8).unwrap();
    for c in 0..3 {
        for y in 0..SIDE {
            for x in 0..SIDE {
                // Output (y, x) reads source (y - 4, x + 4).
                let want = if y < 4 || x + 4 >= SIDE {
                    0
                } else {
                    px(&src, c, y - 4, x + 4)
                };
                assert_eq!(px(&dst, c, y, x), want);
            }
        }
    }
    assert!(pad_crop(&mut dst, &src, 9, 0).is_err());
}

/// Which pixels of each channel coarse dropout zeroed in an all-255 image.
fn dropped(d: &Dropout, rng: &mut ChaCha8Rng) -> [Vec<bool>; 3] {
    let mut img = [255u8; IMAGE_BYTES];
    coarse_dropout(&mut img, d, rng).unwrap();
    std::array::from_fn(|c| {
        img[c * PLANE..(c + 1) * PLANE]
            .iter()
            .map(|&v| v == 0)
            .collect()
    })
}

fn dropout(p: f64, rows: usize, cols: usize, mode: MaskMode) -> Dropout {
    Dropout {
        p,
        rows,
        cols,
        mode,
    }
}

#[test]
fn coarse_dropout_drops_about_p_of_the_cells() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (p, rows, cols) in [(0.1, 7, 4), (0.2, 4, 4), (0.05, 5, 7)] {
        for mode in [MaskMode::Shared, MaskMode::PerChannel] {
            let draws = 2000;
            let mut fraction = 0.0;
            for _ in 0..draws {
                let masks = dropped(&dropout(p, rows, cols, mode), &mut rng);
                // Every pixel of a cell shares its fate: read one pixel per cell. Nearest
                // upscaling puts pixel y in cell y * rows / 32, so cell k covers pixels
                // ceil(32 k / rows) .. ceil(32 (k + 1) / rows).
                let edge = |k: usize, n: usize| (k * SIDE).div_ceil(n);
                for m in &masks {
                    for cy in 0..rows {
                        for cx in 0..cols {
                            let corner = m[edge(cy, rows) * SIDE + edge(cx, cols)];
                            for y in edge(cy, rows)..edge(cy + 1, rows) {
                                for x in edge(cx, cols)..edge(cx + 1, cols) {
                                    assert_eq!(m[y * SIDE + x], corner);
                                }
                            }
                            fraction += f64::from(u8::from(corner));
                        }
                    }
                }
                if mode == MaskMode::Shared {
                    assert!(masks[0] == masks[1] && masks[1] == masks[2]);
                }
            }
            fraction /= (draws * 3 * rows * cols) as f64;
            // Binomial standard error is below 0.004 for these draws; allow 4 of them.
            assert!(
                (fraction - p).abs() < 0.016,
                "p {p}, {rows}x{cols}, {mode:?}: {fraction}"
            );
        }
    }
}

#[test]
fn per_channel_masks_differ() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let differ = (0..100)
        .filter(|_| {
            let m = dropped(&dropout(0.5, 7, 7, MaskMode::PerChannel), &mut rng);
            m[0] != m[1] || m[1] != m[2]
        })
        .count();
    assert_eq!(
        differ, 100,
        "three independent 49-cell masks at p = 0.5 are never all equal"
    );
}

#[test]
fn coarse_dropout_rejects_bad_arguments() {
    let mut img = [1u8; IMAGE_BYTES];
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for d in [
        dropout(1.5, 4, 4, MaskMode::Shared),
        dropout(0.1, 0, 4, MaskMode::Shared),
        dropout(0.1, 4, 0, MaskMode::Shared),
        dropout(0.1, 4, 33, MaskMode::Shared),
    ] {
        assert!(coarse_dropout(&mut img, &d, &mut rng).is_err(), "{d:?}");
    }
    assert_eq!(img, [1u8; IMAGE_BYTES]);
}

#[test]
fn dropout_draws_follow_imgaug() {
    // imgaug: rows and cols = max(floor(32 u), 4) with independent u ~ U(0.02, 0.25). P(4) =
    // (5/32 - 0.02) / 0.23 = 0.592; 5, 6 and 7 each take 1/32 of the range: 0.136.
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let n = 20_000;
    let mut counts = [[0usize; 8]; 2];
    let (mut not_square, mut per_channel, mut p_sum) = (0, 0, 0.0);
    for _ in 0..n {
        let d = Dropout::draw(&mut rng);
        assert!(
            (4..=7).contains(&d.rows) && (4..=7).contains(&d.cols),
            "{d:?}"
        );
        assert!((0.0..0.2).contains(&d.p), "{d:?}");
        counts[0][d.rows] += 1;
        counts[1][d.cols] += 1;
        not_square += usize::from(d.rows != d.cols);
        per_channel += usize::from(d.mode == MaskMode::PerChannel);
        p_sum += d.p;
    }
    // Each frequency within 5 standard errors (sqrt(p (1 - p) / n) <= 0.0035).
    for axis in counts {
        for (cells, want) in [(4, 0.592), (5, 0.136), (6, 0.136), (7, 0.136)] {
            let got = axis[cells] as f64 / n as f64;
            assert!(
                (got - want).abs() < 0.018,
                "{cells} cells: {got}, want {want}"
            );
        }
    }
    // P(rows != cols) = 1 - (0.592^2 + 3 * 0.136^2) = 0.594.
    let got = not_square as f64 / n as f64;
    assert!((got - 0.594).abs() < 0.018, "non-square grids: {got}");
    let got = per_channel as f64 / n as f64;
    assert!((got - 0.5).abs() < 0.018, "per-channel masks: {got}");
    let got = p_sum / n as f64;
    assert!((got - 0.1).abs() < 0.003, "mean p: {got}");
}

#[test]
fn seed_dropout_never_blanks_an_image_or_a_channel() {
    // With at least 16 cells per mask and p < 0.2, a whole channel drops with probability below
    // 0.2^16: over these draws, never. The fraction of dropped pixels averages E[p] = 0.1.
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let n = 20_000;
    let mut dropped_px = 0usize;
    for _ in 0..n {
        let mut img = [255u8; IMAGE_BYTES];
        let d = Dropout::draw(&mut rng);
        coarse_dropout(&mut img, &d, &mut rng).unwrap();
        for plane in img.chunks_exact(PLANE) {
            assert!(plane.contains(&255), "a whole channel dropped by {d:?}");
        }
        dropped_px += img.iter().filter(|&&v| v == 0).count();
    }
    let mean = dropped_px as f64 / (n * IMAGE_BYTES) as f64;
    assert!((mean - 0.1).abs() < 0.005, "mean dropped fraction {mean}");
}

#[test]
fn seed_policy_applies_its_augmenters_in_the_given_order() {
    // The same image and RNG under two orders. An implementation that ignored the order would
    // give equal images every time; images with at most one active augmenter (n <= 1, half of
    // them) are equal under any order, and most with two or three differ.
    let mut src = [0u8; IMAGE_BYTES];
    for (i, v) in src.iter_mut().enumerate() {
        *v = 1 + ((i * 7) % 250) as u8;
    }
    let run = |order: &[SeedOp; 3], index| {
        let mut img = src;
        augment_seed(&mut img, order, &mut image_rng(1, 0, index));
        img
    };
    let forward = [SeedOp::Crop, SeedOp::Flip, SeedOp::Dropout];
    let backward = [SeedOp::Dropout, SeedOp::Flip, SeedOp::Crop];
    let n = 500;
    let differ = (0..n as u64)
        .filter(|&i| run(&forward, i) != run(&backward, i))
        .count();
    assert!(differ > n / 5 && differ < n / 2, "{differ} of {n} differ");
}

#[test]
fn one_augmenter_order_per_batch() {
    // All six orders occur, about equally often, and the order is a function of (seed, epoch,
    // batch).
    let mut seen = std::collections::HashMap::new();
    for batch in 0..6000 {
        *seen.entry(batch_op_order(3, 1, batch)).or_insert(0usize) += 1;
    }
    assert_eq!(seen.len(), 6);
    for (order, count) in &seen {
        assert!((800..1200).contains(count), "{order:?}: {count}");
    }
    assert_eq!(batch_op_order(3, 1, 7), batch_op_order(3, 1, 7));
    let differs = |f: &dyn Fn(u64) -> [SeedOp; 3]| (1..20).any(|k| f(k) != f(0));
    assert!(differs(&|k| batch_op_order(k, 1, 7)));
    assert!(differs(&|k| batch_op_order(3, k, 7)));
}

#[test]
fn augmentation_is_a_function_of_seed_epoch_and_index() {
    let src = random_image(7);
    for policy in [Augment::Seed, Augment::Standard] {
        let run = |seed, epoch, index| {
            let mut img = src;
            let key = ImageKey {
                seed,
                epoch,
                batch: 4,
                index,
            };
            augment_image(&mut img, policy, key);
            img
        };
        assert_eq!(run(1, 2, 3), run(1, 2, 3));
        // Over 20 indices at least one differs from the image of index 0 (each policy leaves an
        // image unchanged with probability well below 1/2).
        let changed = (1..20).filter(|&i| run(1, 2, i) != run(1, 2, 0)).count();
        assert!(changed > 0, "{policy:?}");
        let changed = (1..20).filter(|&e| run(1, e, 3) != run(1, 0, 3)).count();
        assert!(changed > 0, "{policy:?}");
    }
    let mut img = src;
    let key = ImageKey {
        seed: 1,
        epoch: 2,
        batch: 0,
        index: 3,
    };
    augment_image(&mut img, Augment::None, key);
    assert_eq!(img, src);
}

#[test]
fn seed_policy_uses_every_augmenter() {
    // An asymmetric image with no zero pixel: a flip is the exact mirror, dropout makes zeros,
    // and anything else that changes the image is a crop.
    let mut src = [0u8; IMAGE_BYTES];
    for (i, v) in src.iter_mut().enumerate() {
        *v = 1 + ((i * 7) % 250) as u8;
    }
    let mut mirror = src;
    flip_horizontal(&mut mirror);
    let (mut same, mut flips, mut drops, mut crops) = (0, 0, 0, 0);
    let n = 4000;
    for index in 0..n {
        let mut img = src;
        let key = ImageKey {
            seed: 11,
            epoch: 0,
            batch: index / 50,
            index,
        };
        augment_image(&mut img, Augment::Seed, key);
        if img == src {
            same += 1;
        } else if img == mirror {
            flips += 1;
        } else if img.contains(&0) {
            drops += 1;
        } else {
            crops += 1;
        }
    }
    // n = 0 alone leaves a quarter of the images unchanged; flip-only, crop-only and dropout-only
    // outcomes each occur with probability of order 1/12.
    assert!(same > n / 5 && same < n / 2, "unchanged {same}");
    assert!(flips > n / 40, "flips {flips}");
    assert!(drops > n / 10, "dropouts {drops}");
    assert!(crops > n / 20, "crops {crops}");
}

#[test]
fn batch_augmentation_is_independent_of_thread_count() {
    let n = 64;
    let mut images = vec![0u8; n * IMAGE_BYTES];
    ChaCha8Rng::seed_from_u64(8).fill(&mut images[..]);
    let indices: Vec<usize> = (0..n).map(|i| i * 3 + 1).collect();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = images.clone();
        pool.install(|| augment_batch(&mut out, &indices, Augment::Seed, 5, 2, 9))
            .unwrap();
        out
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    // And image i is exactly augment_image of its dataset index.
    let mut img: Image = images[IMAGE_BYTES..2 * IMAGE_BYTES].try_into().unwrap();
    let key = ImageKey {
        seed: 5,
        epoch: 2,
        batch: 9,
        index: indices[1] as u64,
    };
    augment_image(&mut img, Augment::Seed, key);
    assert_eq!(&one[IMAGE_BYTES..2 * IMAGE_BYTES], &img[..]);
    assert!(augment_batch(&mut images[1..], &indices, Augment::Seed, 5, 2, 9).is_err());
}

#[test]
fn image_rngs_are_distinct_streams() {
    let draw = |s, e, i| image_rng(s, e, i).random::<u64>();
    assert_ne!(draw(0, 0, 1), draw(0, 1, 0));
    assert_ne!(draw(1, 0, 0), draw(0, 0, 1));
    assert_eq!(draw(3, 4, 5), draw(3, 4, 5));
}
