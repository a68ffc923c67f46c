//! Augmentation: exactness of each transform, dropout statistics, determinism.

use cifar_data::augment::{
    augment_batch, augment_image, coarse_dropout, crop_resize, flip_horizontal, image_rng,
    pad_crop, Crop, Image, MaskMode,
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
fn crop_resize_samples_the_cropped_region() {
    // A horizontal ramp x * 8 (red), constant elsewhere: cropping 16 pixels off the right and
    // stretching the left half back to 32 columns maps output column x to source (x + 0.5) / 2 - 0.5,
    // clamped to the region's edge pixels.
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
        let s = ((x as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, 15.0);
        let want = (s * 8.0).round() as u8;
        assert_eq!(px(&dst, 0, 5, x), want, "column {x}");
    }
    assert!(
        dst[PLANE..].iter().all(|&v| v == 100),
        "constant planes stay constant"
    );
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
fn dropped(p: f64, cells: usize, mode: MaskMode, rng: &mut ChaCha8Rng) -> [Vec<bool>; 3] {
    let mut img = [255u8; IMAGE_BYTES];
    coarse_dropout(&mut img, p, cells, mode, rng).unwrap();
    std::array::from_fn(|c| {
        img[c * PLANE..(c + 1) * PLANE]
            .iter()
            .map(|&v| v == 0)
            .collect()
    })
}

#[test]
fn coarse_dropout_drops_about_p_of_the_cells() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (p, cells) in [(0.1, 8), (0.2, 4), (0.05, 7)] {
        for mode in [MaskMode::Shared, MaskMode::PerChannel] {
            let draws = 2000;
            let mut fraction = 0.0;
            for _ in 0..draws {
                let masks = dropped(p, cells, mode, &mut rng);
                // Every pixel of a cell shares its fate: read one pixel per cell.
                for m in &masks {
                    for cy in 0..cells {
                        for cx in 0..cells {
                            // Nearest upscaling: pixel y lies in cell y * cells / 32, so cell k
                            // covers rows ceil(32 k / cells) .. ceil(32 (k + 1) / cells).
                            let edge = |k: usize| (k * SIDE).div_ceil(cells);
                            let corner = m[edge(cy) * SIDE + edge(cx)];
                            for y in edge(cy)..edge(cy + 1) {
                                for x in edge(cx)..edge(cx + 1) {
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
            fraction /= (draws * 3 * cells * cells) as f64;
            // Binomial standard error is below 0.003 for these draws; allow 4 of them.
            assert!(
                (fraction - p).abs() < 0.012,
                "p {p}, cells {cells}, {mode:?}: {fraction}"
            );
        }
    }
}

#[test]
fn per_channel_masks_differ() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let differ = (0..100)
        .filter(|_| {
            let m = dropped(0.5, 8, MaskMode::PerChannel, &mut rng);
            m[0] != m[1] || m[1] != m[2]
        })
        .count();
    assert_eq!(
        differ, 100,
        "three independent 64-cell masks at p = 0.5 are never all equal"
    );
}

#[test]
fn coarse_dropout_rejects_bad_arguments() {
    let mut img = [1u8; IMAGE_BYTES];
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    assert!(coarse_dropout(&mut img, 1.5, 4, MaskMode::Shared, &mut rng).is_err());
    assert!(coarse_dropout(&mut img, 0.1, 0, MaskMode::Shared, &mut rng).is_err());
    assert!(coarse_dropout(&mut img, 0.1, 33, MaskMode::Shared, &mut rng).is_err());
}

#[test]
fn augmentation_is_a_function_of_seed_epoch_and_index() {
    let src = random_image(7);
    for policy in [Augment::Seed, Augment::Standard] {
        let run = |seed, epoch, index| {
            let mut img = src;
            augment_image(&mut img, policy, seed, epoch, index);
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
    augment_image(&mut img, Augment::None, 1, 2, 3);
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
        augment_image(&mut img, Augment::Seed, 11, 0, index);
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
        pool.install(|| augment_batch(&mut out, &indices, Augment::Seed, 5, 2))
            .unwrap();
        out
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    // And image i is exactly augment_image of its dataset index.
    let mut img: Image = images[IMAGE_BYTES..2 * IMAGE_BYTES].try_into().unwrap();
    augment_image(&mut img, Augment::Seed, 5, 2, indices[1] as u64);
    assert_eq!(&one[IMAGE_BYTES..2 * IMAGE_BYTES], &img[..]);
    assert!(augment_batch(&mut images[1..], &indices, Augment::Seed, 5, 2).is_err());
}

#[test]
fn image_rngs_are_distinct_streams() {
    let draw = |s, e, i| image_rng(s, e, i).random::<u64>();
    assert_ne!(draw(0, 0, 1), draw(0, 1, 0));
    assert_ne!(draw(1, 0, 0), draw(0, 0, 1));
    assert_eq!(draw(3, 4, 5), draw(3, 4, 5));
}
