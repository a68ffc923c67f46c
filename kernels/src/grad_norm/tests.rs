use tensor_core::Tensor;

use super::*;

/// g1 = (3, 4) has norm 5, g2 = (12) norm 12; together sqrt(9 + 16 + 144) = 13. Clipping to 6.5
/// scales both by 6.5 / 13 = 0.5: g1 = (1.5, 2), g2 = (6).
#[test]
fn clips_a_hand_computed_example() {
    let mut g1 = Tensor::from_vec([2], vec![3.0, 4.0]).unwrap();
    let mut g2 = Tensor::from_vec([1, 1], vec![12.0]).unwrap();
    let norm = clip_by_global_norm(&mut [&mut g1, &mut g2], 6.5).unwrap();
    assert_eq!(norm, 13.0);
    assert_eq!(g1.as_slice().unwrap(), &[1.5, 2.0]);
    assert_eq!(g2.as_slice().unwrap(), &[6.0]);
}

#[test]
fn within_the_bound_nothing_changes() {
    for max_norm in [13.0, 100.0] {
        let mut g1 = Tensor::from_vec([2], vec![3.0, 4.0]).unwrap();
        let mut g2 = Tensor::from_vec([1], vec![12.0]).unwrap();
        let norm = clip_by_global_norm(&mut [&mut g1, &mut g2], max_norm).unwrap();
        assert_eq!(norm, 13.0);
        assert_eq!(g1.as_slice().unwrap(), &[3.0, 4.0]);
        assert_eq!(g2.as_slice().unwrap(), &[12.0]);
    }
    assert_eq!(clip_factor(13.0, 13.0).unwrap(), 1.0);
    assert_eq!(clip_factor(200.0, 100.0).unwrap(), 0.5);
}

/// 1,000,003 values of 0.1f32 (= 0.100000001490116...): the f64 sum of squares is exact to
/// about 1e-12 relative, far from what an f32 accumulation would give.
#[test]
fn sum_of_squares_is_accurate_and_thread_independent() {
    let n = 1_000_003;
    let x = Tensor::full([n], 0.1);
    let v = 0.1f32 as f64;
    let s = sum_of_squares(&x).unwrap();
    assert!((s - n as f64 * v * v).abs() < 1e-12 * s, "{s}");

    let x = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.013).sin()).collect()).unwrap();
    let pool = |k| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| sum_of_squares(&x).unwrap());
    let two = pool(2).install(|| sum_of_squares(&x).unwrap());
    assert_eq!(one.to_bits(), two.to_bits());
}

#[test]
fn a_non_finite_norm_or_bad_bound_is_an_error() {
    let mut g = Tensor::from_vec([3], vec![1.0, f32::NAN, 2.0]).unwrap();
    let e = clip_by_global_norm(&mut [&mut g], 1.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "clip_by_global_norm: the global gradient norm is NaN"
    );
    assert_eq!(g.as_slice().unwrap()[0], 1.0, "nothing is scaled on error");
    assert!(clip_factor(f64::INFINITY, 1.0).is_err());
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let e = clip_factor(1.0, bad).unwrap_err();
        assert!(e.to_string().contains("max norm"), "{e}");
    }
}

/// Lengths around the 16 accumulators and a chunk boundary: the lane sums agree with one serial
/// f64 chain to rounding (each of n terms rounds once, 1.1e-16 relative).
#[test]
fn sum_of_squares_matches_a_serial_sum_at_odd_lengths() {
    for n in [1, 15, 16, 17, 33, (1 << 14) + 5] {
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).cos() * 3.0).collect();
        let serial: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
        let got = sum_of_squares(&Tensor::from_vec([n], v).unwrap()).unwrap();
        assert!(
            (got - serial).abs() <= 1e-15 * n as f64 * serial,
            "n {n}: {got} vs {serial}"
        );
    }
}
