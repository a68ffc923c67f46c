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

/// Values of varied size, from a seed.
fn wave(n: usize, seed: f32) -> Tensor {
    Tensor::from_vec(
        [n],
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 2.0)
            .collect(),
    )
    .unwrap()
}

#[test]
fn square_sums_on_the_cpu_hold_the_bits_of_sum_of_squares() {
    let xs = [wave(5, 0.0), wave((1 << 14) + 3, 1.0), wave(40, 2.0)];
    let mut sums = SquareSums::new(Device::Cpu, 4).unwrap();
    assert_eq!((sums.len(), sums.device()), (4, Device::Cpu));
    // Set out of order; slot 3 stays unset.
    for slot in [2, 0, 1] {
        sums.set(slot, &xs[slot]).unwrap();
    }
    let got = sums.read().unwrap();
    for (slot, x) in xs.iter().enumerate() {
        assert_eq!(got[slot].to_bits(), sum_of_squares(x).unwrap().to_bits());
    }
    assert_eq!(got[3], 0.0);
    assert_eq!(
        sums.set(4, &xs[0]).unwrap_err().to_string(),
        "SquareSums::set: slot 4 of 4"
    );
    let on_emu = crate::cuda::to_device(&xs[0], Device::CudaEmu).unwrap();
    assert_eq!(
        sums.set(0, &on_emu).unwrap_err().to_string(),
        "SquareSums::set: tensor is on cuda-emu, expected cpu"
    );
}

/// The device sums run in another order (blocks and warps, not chunks and lanes).
const DEVICE_SUM_RTOL: f64 = 1e-12;

/// Tensors on the emulated device: each slot matches the CPU's sum, and the sums of every
/// tensor come back in one copy, after none while they are set.
#[test]
fn emu_square_sums_match_the_cpu_and_are_read_in_one_copy() {
    use crate::cuda::emu::downloads_on_this_thread;
    let before = downloads_on_this_thread();
    square_sums_match_the_cpu(Device::CudaEmu);
    assert_eq!(downloads_on_this_thread(), before + 1);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_square_sums_match_the_cpu() {
    square_sums_match_the_cpu(Device::Cuda(0));
}

/// Sets the slots of a [`SquareSums`] on `device` (in reverse order) and reads them once.
fn square_sums_match_the_cpu(device: Device) {
    // One block, a partial block, and more values than one launch has threads (grid-stride).
    let xs = [wave(1, 0.0), wave(777, 1.0), wave(300_001, 2.0)];
    let on_device: Vec<Tensor> = xs
        .iter()
        .map(|x| crate::cuda::to_device(x, device).unwrap())
        .collect();
    let mut sums = SquareSums::new(device, xs.len()).unwrap();
    for (slot, x) in on_device.iter().enumerate().rev() {
        sums.set(slot, x).unwrap();
    }
    let got = sums.read().unwrap();
    for (slot, x) in xs.iter().enumerate() {
        let cpu = sum_of_squares(x).unwrap();
        assert!(
            (got[slot] - cpu).abs() <= DEVICE_SUM_RTOL * cpu,
            "slot {slot}: {device} {:e}, cpu {cpu:e}",
            got[slot]
        );
    }
    assert_eq!(
        sums.set(3, &on_device[0]).unwrap_err().to_string(),
        "SquareSums::set: slot 3 of 3"
    );
    assert!(sums.set(0, &xs[0]).is_err(), "a CPU tensor in device sums");
}

/// The hand-computed example of [`clips_a_hand_computed_example`] on the emulated device, with
/// one host read for the norm.
#[test]
fn emu_clip_by_global_norm_reads_the_device_once() {
    use crate::cuda::emu::downloads_on_this_thread;
    let emu = |dims: &[usize], v: Vec<f32>| {
        let t = Tensor::from_vec(dims, v).unwrap();
        crate::cuda::to_device(&t, Device::CudaEmu).unwrap()
    };
    let mut g1 = emu(&[2], vec![3.0, 4.0]);
    let mut g2 = emu(&[1, 1], vec![12.0]);
    let before = downloads_on_this_thread();
    let norm = clip_by_global_norm(&mut [&mut g1, &mut g2], 6.5).unwrap();
    assert_eq!(downloads_on_this_thread(), before + 1);
    assert_eq!(norm, 13.0);
    assert_eq!((g1.to_vec(), g2.to_vec()), (vec![1.5, 2.0], vec![6.0]));
    let mut cpu = Tensor::zeros([1]);
    let e = clip_by_global_norm(&mut [&mut g1, &mut cpu], 6.5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SquareSums::set: tensor is on cpu, expected cuda-emu"
    );
}
