use tensor_core::Tensor;

use super::*;

/// f32 arithmetic against f64 hand computation, on weights near 1: a few f32 ulps (1.2e-7).
const W_TOL: f32 = 1e-6;

fn assert_close(got: &Tensor, expected: &[f32], tol: f32) {
    for (i, (&g, &e)) in got.as_slice().unwrap().iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "at {i}: {g} vs {e}");
    }
}

/// The betas are f32, as in TensorFlow: 0.999f32 = 0.99900001, so 1 - beta2 is 1.3e-5 smaller
/// in relative terms than 0.001, and lr_t moves by 6.4e-6 relative from the decimal hand value.
const LR_T_RTOL: f32 = 1e-5;

/// m carries 1 - 0.9f32 = 0.100000024, 2.4e-7 relative above 0.1: about 1e-8 on m near 0.04,
/// plus f32 rounding (3.7e-9 per ulp there).
const M_TOL: f32 = 5e-8;
/// v carries 1 - 0.999f32, 1.3e-5 relative below 0.001.
const MOMENT_RTOL: f32 = 2e-5;

fn assert_rel(got: f32, expected: f32) {
    assert!(
        (got - expected).abs() <= LR_T_RTOL * expected,
        "{got} vs {expected}"
    );
}

/// lr 0.01, beta1 0.9, beta2 0.999, eps 1e-8.
///
/// Step 1, g = (0.1, -0.2, 0): m = 0.1 g = (0.01, -0.02, 0), v = 0.001 g^2 = (1e-5, 4e-5, 0),
/// lr_1 = 0.01 sqrt(0.001) / 0.1 = 0.00316228, m / sqrt(v) = sign(g) * 3.16228, so each weight
/// moves by 0.01 against its gradient (eps changes the 8th digit): w = (0.99, -1.99, 0.5).
///
/// Step 2, g = (0.3, 0.1, -0.4): m = 0.9 m + 0.1 g = (0.039, -0.008, -0.04),
/// v = 0.999 v + 0.001 g^2 = (9.999e-5, 4.996e-5, 1.6e-4),
/// lr_2 = 0.01 sqrt(1 - 0.999^2) / (1 - 0.9^2) = 0.00235317, and
/// w = (0.99 - lr_2 * 0.039 / 0.0099995, -1.99 + lr_2 * 0.008 / 0.0070682, 0.5 + lr_2 * 0.04 / 0.0126491)
///   = (0.9808222, -1.9873366, 0.5074414).
#[test]
fn one_and_two_steps_match_hand_computed_values() {
    let cfg = Adam {
        lr: 0.01,
        ..Adam::default()
    };
    let mut w = Tensor::from_vec([3], vec![1.0, -2.0, 0.5]).unwrap();
    let mut m = Tensor::zeros([3]);
    let mut v = Tensor::zeros([3]);

    assert_rel(cfg.lr_t(1).unwrap(), 0.003_162_277_7);
    let g1 = Tensor::from_vec([3], vec![0.1, -0.2, 0.0]).unwrap();
    adam_update(&mut w, &mut m, &mut v, &g1, &cfg, 1).unwrap();
    assert_close(&m, &[0.01, -0.02, 0.0], M_TOL);
    assert_close(&v, &[1e-5, 4e-5, 0.0], 4e-5 * MOMENT_RTOL);
    assert_close(&w, &[0.99, -1.99, 0.5], W_TOL);
    assert_eq!(
        w.as_slice().unwrap()[2],
        0.5,
        "a zero gradient leaves w exactly"
    );

    assert_rel(cfg.lr_t(2).unwrap(), 0.002_353_167_3);
    let g2 = Tensor::from_vec([3], vec![0.3, 0.1, -0.4]).unwrap();
    adam_update(&mut w, &mut m, &mut v, &g2, &cfg, 2).unwrap();
    assert_close(&m, &[0.039, -0.008, -0.04], M_TOL);
    assert_close(&v, &[9.999e-5, 4.996e-5, 1.6e-4], 1.6e-4 * MOMENT_RTOL);
    assert_close(&w, &[0.980_822_2, -1.987_336_6, 0.507_441_4], W_TOL);
}

#[test]
fn the_default_is_the_seeds_recipe() {
    assert_eq!(
        Adam::default(),
        Adam {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8
        }
    );
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let n = 100_003;
    let w0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let g = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
    let run = || {
        let (mut w, mut m, mut v) = (w0.clone(), Tensor::zeros([n]), Tensor::zeros([n]));
        for t in 1..=3 {
            adam_update(&mut w, &mut m, &mut v, &g, &Adam::default(), t).unwrap();
        }
        (w, m, v)
    };
    let pool = |k| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
    };
    assert_eq!(pool(1).install(run), pool(2).install(run));
}

#[test]
fn bad_arguments_are_errors() {
    let (mut w, mut m, mut v) = (
        Tensor::zeros([2, 3]),
        Tensor::zeros([2, 3]),
        Tensor::zeros([2, 3]),
    );
    let g = Tensor::zeros([2, 3]);
    let ok = Adam::default();
    let e = adam_update(&mut w, &mut m, &mut v, &g, &ok, 0).unwrap_err();
    assert_eq!(e.to_string(), "adam: step t is 0; steps count from 1");
    for cfg in [
        Adam { lr: -1.0, ..ok },
        Adam { lr: f32::NAN, ..ok },
        Adam { beta1: 1.0, ..ok },
        Adam { beta2: -0.1, ..ok },
        Adam { epsilon: 0.0, ..ok },
    ] {
        assert!(
            adam_update(&mut w, &mut m, &mut v, &g, &cfg, 1).is_err(),
            "{cfg:?}"
        );
    }
    let mut bad_v = Tensor::zeros([3, 2]);
    let e = adam_update(&mut w, &mut m, &mut bad_v, &g, &ok, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "adam_update: v has shape (3, 2), expected (2, 3)"
    );
    let e = adam_update(&mut w, &mut m, &mut v, &Tensor::zeros([6]), &ok, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "adam_update: g has shape (6,), expected (2, 3)"
    );
}

/// The three passes the fused update replaces: scale, update, zero.
fn unfused(w: &mut Tensor, m: &mut Tensor, v: &mut Tensor, g: &mut Tensor, t: u64, s: f32) {
    if s != 1.0 {
        crate::grad_norm::scale_in_place(g, s).unwrap();
    }
    adam_update(w, m, v, g, &Adam::default(), t).unwrap();
    g.fill(0.0).unwrap();
}

#[test]
fn fused_scale_update_and_zero_is_bit_identical_to_three_passes_on_any_thread_count() {
    let n = 3 * (1 << 14) + 11;
    let w0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let g0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
    let fused = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut w, mut m, mut v) = (w0.clone(), Tensor::zeros([n]), Tensor::zeros([n]));
            for (t, s) in [(1, 1.0), (2, 0.37), (3, 1.0)] {
                let mut g = g0.clone();
                adam_update_scaled_and_zero(&mut w, &mut m, &mut v, &mut g, &Adam::default(), t, s)
                    .unwrap();
                assert!(g.to_vec().iter().all(|&x| x == 0.0), "g is zeroed");
            }
            (w, m, v)
        })
    };
    let (mut w, mut m, mut v) = (w0.clone(), Tensor::zeros([n]), Tensor::zeros([n]));
    for (t, s) in [(1, 1.0), (2, 0.37), (3, 1.0)] {
        unfused(&mut w, &mut m, &mut v, &mut g0.clone(), t, s);
    }
    let one = fused(1);
    assert_eq!(one, (w, m, v));
    assert_eq!(fused(2), one);
}

#[test]
fn fused_update_refuses_a_bad_scale_and_changes_nothing() {
    let (mut w, mut m, mut v, mut g) = (
        Tensor::full([4], 1.0),
        Tensor::zeros([4]),
        Tensor::zeros([4]),
        Tensor::full([4], 0.5),
    );
    for s in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = adam_update_scaled_and_zero(&mut w, &mut m, &mut v, &mut g, &Adam::default(), 1, s)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("adam_update_scaled_and_zero: gradient scale"),
            "{e}"
        );
    }
    assert_eq!(g.to_vec(), vec![0.5; 4]);
    assert_eq!(w.to_vec(), vec![1.0; 4]);
    let e = adam_update_scaled_and_zero(
        &mut w,
        &mut m,
        &mut v,
        &mut Tensor::zeros([5]),
        &Adam::default(),
        1,
        1.0,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "adam_update_scaled_and_zero: g has shape (5,), expected (4,)"
    );
}

#[test]
fn emu_fused_update_matches_cpu() {
    use tensor_core::Device;
    let emu = |t: &Tensor| crate::cuda::to_device(t, Device::CudaEmu).unwrap();
    let n = 333;
    let w0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let g0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
    let (mut w, mut m, mut v) = (w0.clone(), Tensor::zeros([n]), Tensor::zeros([n]));
    let (mut ew, mut em, mut ev) = (emu(&w0), emu(&m), emu(&v));
    for (t, s) in [(1, 0.5), (2, 1.0)] {
        let (mut g, mut eg) = (g0.clone(), emu(&g0));
        adam_update_scaled_and_zero(&mut w, &mut m, &mut v, &mut g, &Adam::default(), t, s)
            .unwrap();
        adam_update_scaled_and_zero(&mut ew, &mut em, &mut ev, &mut eg, &Adam::default(), t, s)
            .unwrap();
        assert!(eg.to_vec().iter().all(|&x| x == 0.0), "emu g is zeroed");
    }
    // A GPU may contract a * b + c into one rounding: a few ulps, as the kernel parity tests.
    for (i, (e, c)) in ew.to_vec().iter().zip(w.to_vec()).enumerate() {
        assert!(
            (e - c).abs() <= 1e-7 + 1e-6 * c.abs(),
            "w[{i}]: emu {e}, cpu {c}"
        );
    }
}
