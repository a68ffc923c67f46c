use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::{Device, Shape, Tensor};

use super::*;

const KEY: MaskKey = MaskKey {
    seed: 7,
    step: 1,
    layer: 3,
};

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn draw(dims: [usize; 4], block: usize, keep: f32, key: MaskKey) -> DropBlockMask {
    dropblock_mask(&Shape::from(dims), Device::Cpu, block, keep, key)
        .unwrap()
        .expect("a mask, not the identity")
}

/// The seed's steps taken literally: sample the grid, pad it (p0 before, (b-1)/2 after), max-pool
/// b x b stride 1 with TF SAME padding ((b-1)/2 before; padded cells are 0 and never win), 1 - pool.
fn literal_mask(dims: [usize; 4], b: usize, keep: f32, key: MaskKey) -> Vec<u8> {
    let [n, c, h, w] = dims;
    let (gh, gw) = (h - b + 1, w - b + 1);
    let gamma = dropblock_gamma(h, w, b, keep);
    let p0 = (b - 1) - (b - 1) / 2;
    let pool_before = (b - 1) / 2;
    let mut out = Vec::with_capacity(n * c * h * w);
    for plane in 0..n * c {
        let mut padded = vec![0u8; h * w];
        for i in 0..gh {
            for j in 0..gw {
                let e = ((plane * gh + i) * gw + j) as u64;
                padded[(i + p0) * w + j + p0] = (key.uniform(e) < gamma) as u8;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let mut pooled = 0u8;
                for dy in 0..b {
                    for dx in 0..b {
                        let (py, px) = (y + dy, x + dx);
                        if py >= pool_before
                            && px >= pool_before
                            && py - pool_before < h
                            && px - pool_before < w
                        {
                            pooled = pooled.max(padded[(py - pool_before) * w + px - pool_before]);
                        }
                    }
                }
                out.push(1 - pooled);
            }
        }
    }
    out
}

#[test]
fn gamma_matches_the_formula() {
    // (1 - 0.9) * 1024 / 25 / (28 * 28)
    let g = dropblock_gamma(32, 32, 5, 0.9);
    assert!((g - 0.005_224_49).abs() < 1e-8, "{g}");
    assert_eq!(dropblock_gamma(8, 8, 3, 1.0), 0.0);
}

#[test]
fn identity_on_a_map_smaller_than_the_block_and_at_keep_one() {
    let s = Shape::from([2, 3, 4, 4]);
    assert_eq!(dropblock_mask(&s, Device::Cpu, 5, 0.9, KEY).unwrap(), None);
    // One axis too small is enough: the sampling grid is empty.
    assert_eq!(
        dropblock_mask(&Shape::from([2, 3, 9, 4]), Device::Cpu, 5, 0.8, KEY).unwrap(),
        None
    );
    assert_eq!(
        dropblock_mask(&Shape::from([2, 3, 32, 32]), Device::Cpu, 5, 1.0, KEY).unwrap(),
        None
    );
}

#[test]
fn mask_equals_the_literal_pad_and_max_pool() {
    let cases = [
        ([2, 3, 9, 11], 5, 0.7),
        ([1, 2, 8, 7], 4, 0.6),
        ([3, 1, 6, 6], 3, 0.5),
        ([1, 2, 5, 5], 1, 0.8),
        ([2, 2, 7, 6], 5, 0.5),
    ];
    for (dims, b, keep) in cases {
        let m = draw(dims, b, keep, KEY);
        let expected = literal_mask(dims, b, keep, KEY);
        assert_eq!(
            m.keep().unwrap(),
            expected,
            "{dims:?} block {b} keep {keep}"
        );
        let kept = expected.iter().filter(|&&k| k == 1).count();
        assert!(
            kept > 0 && kept < expected.len(),
            "{dims:?}: a trivial mask"
        );
        assert_eq!(
            m.scale().unwrap(),
            (expected.len() as f64 / kept as f64) as f32
        );
    }
}

/// keep 0.9 on 32x32 with b = 5 drops, in expectation, E = mean over pixels of
/// 1 - (1 - gamma)^(r(y) r(x)), where r counts the grid rows (columns) whose block covers the
/// pixel: about 9.47% (block overlaps and the border make it a little less than 10%).
///
/// Bound: the dropped fraction f over P planes is a function of P * 784 independent centres, each
/// changing f by at most 25 / (P * 1024). McDiarmid's inequality gives
/// P(|f - E| >= t) <= 2 exp(-2 t^2 P 1024^2 / (784 * 625)); with P = 40,000 planes and t = 0.0075,
/// that is below 2e-4.
#[test]
fn keep_point_nine_drops_about_ten_percent_over_many_draws() {
    let (b, keep) = (5, 0.9f32);
    let gamma = dropblock_gamma(32, 32, b, keep) as f64;
    let reach = |p: usize| (p.min(27) + 1 - p.saturating_sub(b - 1)) as i32;
    let mut expected = 0.0;
    for y in 0..32 {
        for x in 0..32 {
            expected += 1.0 - (1.0 - gamma).powi(reach(y) * reach(x));
        }
    }
    expected /= 1024.0;
    assert!((expected - 0.0947).abs() < 1e-3, "{expected}");

    let (mut dropped, mut total) = (0usize, 0usize);
    for step in 0..100 {
        let m = draw([4, 100, 32, 32], b, keep, MaskKey { step, ..KEY });
        let keep = m.keep().unwrap();
        dropped += keep.iter().filter(|&&k| k == 0).count();
        total += keep.len();
    }
    let f = dropped as f64 / total as f64;
    assert!(
        (f - expected).abs() < 0.0075,
        "dropped {f}, expected {expected}"
    );
    assert!((f - 0.10).abs() < 0.015, "dropped {f}");
}

/// With x = 1 the mean of y is sum(mask) * scale / len = 1 up to rounding, on every draw. With a
/// random x (independent of the mask) the mean of y is the mean of x over the kept values, whose
/// standard deviation is about std(x) / sqrt(kept) < 0.002 here; we allow 0.01 per draw.
#[test]
fn rescaling_keeps_the_mean_activation() {
    let dims = [8, 16, 32, 32];
    let ones = Tensor::full(dims, 1.0);
    let x = Tensor::uniform(dims, 0.0, 2.0, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let mean =
        |t: &Tensor| t.as_slice().unwrap().iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64;
    let mean_x = mean(&x);
    for step in 0..20 {
        let m = draw(dims, 5, 0.85, MaskKey { step, ..KEY });
        let mut y = Tensor::zeros(dims);
        dropblock_apply(&mut y, &ones, &m).unwrap();
        assert!((mean(&y) - 1.0).abs() < 1e-5, "step {step}: {}", mean(&y));
        dropblock_apply(&mut y, &x, &m).unwrap();
        assert!(
            (mean(&y) - mean_x).abs() < 0.01,
            "step {step}: {} vs {mean_x}",
            mean(&y)
        );
    }
}

#[test]
fn apply_multiplies_by_mask_and_scale() {
    let dims = [2, 3, 7, 9];
    let m = draw(dims, 3, 0.7, KEY);
    let dy = Tensor::uniform(dims, -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
    let mut dx = Tensor::full(dims, f32::NAN);
    dropblock_apply(&mut dx, &dy, &m).unwrap();
    let (keep, scale) = (m.keep().unwrap(), m.scale().unwrap());
    for (i, (&g, &d)) in dx
        .as_slice()
        .unwrap()
        .iter()
        .zip(dy.as_slice().unwrap())
        .enumerate()
    {
        let expected = if keep[i] == 1 { d * scale } else { 0.0 };
        assert_eq!(g, expected, "at {i}");
    }
}

/// gamma is just under 1 on a 5x5 map with block 5: the one centre per plane is almost surely
/// drawn and every value dropped. The scale is then 0 and y is 0, not NaN.
#[test]
fn an_all_dropped_mask_gives_zeros_not_nan() {
    let dims = [2, 3, 5, 5];
    let m = draw(dims, 5, 1e-6, KEY);
    assert!(m.keep().unwrap().iter().all(|&k| k == 0));
    assert_eq!(m.scale().unwrap(), 0.0);
    let mut y = Tensor::full(dims, f32::NAN);
    dropblock_apply(&mut y, &Tensor::full(dims, 3.0), &m).unwrap();
    assert!(y.as_slice().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn bit_identical_on_one_and_two_threads_and_across_calls() {
    let dims = [3, 5, 32, 32];
    let x = Tensor::uniform(dims, -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(8)).unwrap();
    let run = || {
        let m = draw(dims, 5, 0.8, KEY);
        let mut y = Tensor::zeros(dims);
        dropblock_apply(&mut y, &x, &m).unwrap();
        (m, y)
    };
    let one = on_threads(1, run);
    let two = on_threads(2, run);
    assert_eq!(one, two);
    assert_eq!(run(), one);
    assert_ne!(draw(dims, 5, 0.8, MaskKey { layer: 4, ..KEY }), one.0);
}

#[test]
fn bad_arguments_are_errors() {
    let s = Shape::from([1, 2, 8, 8]);
    for keep in [0.0f32, 1.01, f32::NAN] {
        let e = dropblock_mask(&s, Device::Cpu, 3, keep, KEY).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dropblock_mask: keep probability"),
            "{e}"
        );
    }
    let e = dropblock_mask(&s, Device::Cpu, 0, 0.9, KEY).unwrap_err();
    assert_eq!(e.to_string(), "dropblock_mask: block size is 0");
    let e = dropblock_mask(&Shape::from([2, 8, 8]), Device::Cpu, 3, 0.9, KEY).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dropblock_mask: map has shape (2, 8, 8), expected rank 4 (N, C, H, W)"
    );
    let m = draw([1, 2, 8, 8], 3, 0.5, KEY);
    let mut y = Tensor::zeros([1, 2, 8, 8]);
    let e = dropblock_apply(&mut y, &Tensor::zeros([1, 2, 8, 7]), &m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dropblock_apply: input has shape (1, 2, 8, 7), expected (1, 2, 8, 8)"
    );
    let mut wrong = Tensor::zeros([2, 8, 8]);
    assert!(dropblock_apply(&mut wrong, &Tensor::zeros([1, 2, 8, 8]), &m).is_err());
}

#[test]
fn apply_in_place_gives_the_bits_of_apply_on_any_thread_count_and_refuses_another_device() {
    // 2 x 64 planes of 16 x 16: more than one parallel chunk of the CPU apply.
    let dims = [2, 64, 16, 16];
    let mask = draw(dims, 5, 0.8, KEY);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
    let mut want = Tensor::zeros(dims);
    dropblock_apply(&mut want, &x, &mask).unwrap();
    for threads in [1, 2] {
        let got = on_threads(threads, || {
            let mut y = x.clone();
            dropblock_apply_in_place(&mut y, &mask).unwrap();
            y
        });
        assert_eq!(got, want, "{threads} threads");
    }
    let e = dropblock_apply_in_place(
        &mut crate::cuda::to_device(&x, Device::CudaEmu).unwrap(),
        &mask,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "dropblock_apply: mask is on cpu, the other tensors on cuda-emu"
    );
    let e = dropblock_apply_in_place(&mut Tensor::zeros([2, 64, 16, 15]), &mask).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dropblock_apply_in_place: x has shape (2, 64, 16, 15), expected (2, 64, 16, 16)"
    );
}

/// On the emulated device the mask is drawn there, by the kernel, and stays there: mask, scale,
/// forward and backward are the CPU's bit for bit, the identity cases and an all-dropped mask
/// included. A mask is only applied to tensors of its own device.
#[test]
fn emu_mask_drawn_on_the_device_gives_the_cpu_mask_scale_and_outputs() {
    let emu = |t: &Tensor| crate::cuda::to_device(t, Device::CudaEmu).unwrap();
    let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let cases = [
        ([2, 3, 9, 11], 5, 0.7),
        ([3, 1, 6, 6], 3, 0.5),
        ([1, 2, 5, 5], 1, 0.8),
        ([2, 3, 5, 5], 5, 1e-6),
        ([2, 64, 16, 16], 5, 0.8),
        ([2, 3, 4, 4], 5, 0.9),
        ([2, 3, 32, 32], 5, 1.0),
    ];
    for (s, (dims, b, keep)) in cases.into_iter().enumerate() {
        let shape = Shape::from(dims);
        let cpu = dropblock_mask(&shape, Device::Cpu, b, keep, KEY).unwrap();
        let dev = dropblock_mask(&shape, Device::CudaEmu, b, keep, KEY).unwrap();
        let (Some(cpu), Some(dev)) = (cpu, dev.clone()) else {
            assert_eq!(dev, None, "case {s}: the CPU passes x through");
            continue;
        };
        assert_eq!(dev.device(), Device::CudaEmu, "case {s}");
        assert_eq!(dev.keep().unwrap(), cpu.keep().unwrap(), "case {s}: mask");
        let (scale, want) = (dev.scale().unwrap(), cpu.scale().unwrap());
        assert_eq!(scale.to_bits(), want.to_bits(), "case {s}: scale");

        let x = Tensor::uniform(dims, -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(s as u64)).unwrap();
        let mut y = Tensor::zeros(dims);
        dropblock_apply(&mut y, &x, &cpu).unwrap();
        let mut ey = emu(&Tensor::full(dims, f32::NAN));
        dropblock_apply(&mut ey, &emu(&x), &dev).unwrap();
        assert_eq!(bits(&ey), bits(&y), "case {s}: apply");
        let mut ex = emu(&x);
        dropblock_apply_in_place(&mut ex, &dev).unwrap();
        assert_eq!(bits(&ex), bits(&y), "case {s}: apply in place");

        let e = dropblock_apply_in_place(&mut x.clone(), &dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dropblock_apply_in_place: mask is on cuda-emu, the other tensors on cpu"
        );
    }
}

/// The device kernel holds a plane's sampling grid in shared memory: a larger grid is refused by
/// name, before anything is launched.
#[test]
fn emu_a_sampling_grid_too_large_for_shared_memory_is_an_error() {
    let e =
        dropblock_mask(&Shape::from([1, 1, 220, 220]), Device::CudaEmu, 1, 0.9, KEY).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda dropblock_mask: a 220 x 220 map with block 1 has a sampling grid of 48400 cells, \
         more than the kernel's 48128"
    );
}
