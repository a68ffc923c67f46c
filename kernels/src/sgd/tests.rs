use tensor_core::Tensor;

use super::*;

/// f32 arithmetic against hand computation on weights near 1: a few f32 ulps.
const W_TOL: f32 = 1e-6;

fn two_steps(cfg: &Sgd) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut w = Tensor::from_vec([2], vec![1.0, -2.0]).unwrap();
    let mut buf = Tensor::zeros([2]);
    [[0.5f32, 0.2], [-0.1, 0.4]]
        .iter()
        .map(|g| {
            let g = Tensor::from_vec([2], g.to_vec()).unwrap();
            sgd_update(&mut w, &mut buf, &g, cfg).unwrap();
            (w.to_vec(), buf.to_vec())
        })
        .collect()
}

fn assert_close(got: &[f32], expected: &[f32]) {
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= W_TOL, "at {i}: {g} vs {e}");
    }
}

const CFG: Sgd = Sgd {
    lr: 0.1,
    momentum: 0.9,
    nesterov: false,
    weight_decay: 0.01,
};

/// w = (1, -2), g1 = (0.5, 0.2), g2 = (-0.1, 0.4), lr 0.1, momentum 0.9, weight decay 0.01.
/// Step 1: d = g1 + 0.01 w = (0.51, 0.18) = buf; w = (1 - 0.051, -2 - 0.018) = (0.949, -2.018).
/// Step 2: d = g2 + 0.01 w = (-0.09051, 0.37982); buf = 0.9 (0.51, 0.18) + d = (0.36849, 0.54182);
/// w = (0.949 - 0.036849, -2.018 - 0.054182) = (0.912151, -2.072182).
#[test]
fn momentum_matches_hand_computed_values() {
    let steps = two_steps(&CFG);
    assert_close(&steps[0].0, &[0.949, -2.018]);
    assert_close(&steps[0].1, &[0.51, 0.18]);
    assert_close(&steps[1].0, &[0.912_151, -2.072_182]);
    assert_close(&steps[1].1, &[0.368_49, 0.541_82]);
}

/// Same inputs with Nesterov: the step is d + 0.9 buf.
/// Step 1: buf = (0.51, 0.18), step = (0.969, 0.342), w = (0.9031, -2.0342).
/// Step 2: d = (-0.090969, 0.379658), buf = (0.368031, 0.541658),
/// step = d + 0.9 buf = (0.2402589, 0.8671502), w = (0.87907411, -2.12091502).
#[test]
fn nesterov_matches_hand_computed_values() {
    let steps = two_steps(&Sgd {
        nesterov: true,
        ..CFG
    });
    assert_close(&steps[0].0, &[0.9031, -2.0342]);
    assert_close(&steps[1].0, &[0.879_074_1, -2.120_915]);
    assert_close(&steps[1].1, &[0.368_031, 0.541_658]);
}

/// Momentum 0 and no decay: w -= lr g, twice: (0.95, -2.02) then (0.96, -2.06).
#[test]
fn plain_sgd() {
    let steps = two_steps(&Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        ..CFG
    });
    assert_close(&steps[0].0, &[0.95, -2.02]);
    assert_close(&steps[1].0, &[0.96, -2.06]);
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let n = 100_003;
    let w0 = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let g = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.11).cos()).collect()).unwrap();
    let run = || {
        let (mut w, mut buf) = (w0.clone(), Tensor::zeros([n]));
        for _ in 0..3 {
            sgd_update(
                &mut w,
                &mut buf,
                &g,
                &Sgd {
                    nesterov: true,
                    ..CFG
                },
            )
            .unwrap();
        }
        (w, buf)
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
    let (mut w, mut buf, g) = (Tensor::zeros([4]), Tensor::zeros([4]), Tensor::zeros([4]));
    for cfg in [
        Sgd { lr: -0.1, ..CFG },
        Sgd {
            lr: f32::INFINITY,
            ..CFG
        },
        Sgd {
            momentum: 1.0,
            ..CFG
        },
        Sgd {
            momentum: f32::NAN,
            ..CFG
        },
        Sgd {
            weight_decay: -1.0,
            ..CFG
        },
    ] {
        assert!(sgd_update(&mut w, &mut buf, &g, &cfg).is_err(), "{cfg:?}");
    }
    let e = sgd_update(
        &mut w,
        &mut buf,
        &g,
        &Sgd {
            momentum: 0.0,
            nesterov: true,
            ..CFG
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "sgd: Nesterov momentum needs momentum > 0");
    let e = sgd_update(&mut w, &mut Tensor::zeros([5]), &g, &CFG).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sgd_update: buf has shape (5,), expected (4,)"
    );
    assert!(sgd_update(&mut w, &mut buf, &Tensor::zeros([2, 2]), &CFG).is_err());
}
