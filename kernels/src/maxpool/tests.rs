use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::{Device, Tensor};

use super::*;

fn pool(x: &Tensor, p: &Pool2d) -> (Tensor, Vec<u32>) {
    let mut y = Tensor::zeros(p.output_dims("test", x).unwrap());
    let argmax = maxpool2d_forward(&mut y, x, p).unwrap();
    assert_eq!(argmax.device(), Device::Cpu);
    (y, argmax.to_host().unwrap())
}

#[test]
fn same_padding_follows_tensorflow() {
    let sp = |out, before, after| Ok(SamePadding { out, before, after });
    assert_eq!(same_padding(32, 3, 2), sp(16, 0, 1));
    assert_eq!(same_padding(16, 3, 2), sp(8, 0, 1));
    assert_eq!(same_padding(5, 3, 2), sp(3, 1, 1));
    assert_eq!(same_padding(4, 3, 1), sp(4, 1, 1));
    assert_eq!(same_padding(4, 5, 1), sp(4, 2, 2));
    assert_eq!(same_padding(7, 2, 3), sp(3, 0, 1));
    assert_eq!(same_padding(10, 2, 4), sp(3, 0, 0));
    assert_eq!(same_padding(1, 3, 2), sp(1, 1, 1));
    assert_eq!(
        same_padding(8, 3, 0).unwrap_err().to_string(),
        "same_padding: kernel 3 and stride 0 must be at least 1"
    );
}

#[test]
fn pool_32_to_16_pads_nothing_before_and_one_after() {
    let p = Pool2d::square(3, 2).unwrap();
    // Values falling in row-major order, all negative: each window's maximum is its first real
    // cell, so the winners show where the windows start. A padded cell, were it a 0, would win.
    let falling =
        Tensor::from_vec([1, 1, 32, 32], (0..1024).map(|i| -1.0 - i as f32).collect()).unwrap();
    let (y, argmax) = pool(&falling, &p);
    assert_eq!(y.dims(), &[1, 1, 16, 16]);
    for oy in 0..16 {
        for ox in 0..16 {
            let want = (2 * oy) * 32 + 2 * ox;
            assert_eq!(argmax[oy * 16 + ox] as usize, want, "output ({oy}, {ox})");
            assert_eq!(y.as_slice().unwrap()[oy * 16 + ox], -1.0 - want as f32);
        }
    }
    // The last output sees rows and columns 30 and 31 only: 30 * 32 + 30 wins, not a padded cell.
    assert_eq!(argmax[255], 30 * 32 + 30);
    assert_eq!(y.as_slice().unwrap()[255], -991.0);
    // Values rising in row-major order: each window's maximum is its last real cell; the windows
    // of the last row and column end on the padding, so their winners sit in row or column 31.
    let rising = Tensor::from_vec(
        [1, 1, 32, 32],
        (0..1024).map(|i| i as f32 - 2000.0).collect(),
    )
    .unwrap();
    let (y, argmax) = pool(&rising, &p);
    for oy in 0..16 {
        for ox in 0..16 {
            let want = (2 * oy + 2).min(31) * 32 + (2 * ox + 2).min(31);
            assert_eq!(argmax[oy * 16 + ox] as usize, want, "output ({oy}, {ox})");
        }
    }
    assert_eq!(argmax[255], 1023);
    assert_eq!(y.as_slice().unwrap()[255], 1023.0 - 2000.0);
}

/// The definition, spelled out: pad the plane with -inf cells and take the max over each window.
fn reference(x: &[f32], h: usize, w: usize, p: &Pool2d) -> Vec<f32> {
    let g = p.geometry(h, w);
    let (kh, kw) = p.kernel();
    let (sh, sw) = p.stride();
    let (ph, pw) = (
        h + g.rows.before + g.rows.after,
        w + g.cols.before + g.cols.after,
    );
    let mut padded = vec![f32::NEG_INFINITY; ph * pw];
    for r in 0..h {
        for c in 0..w {
            padded[(r + g.rows.before) * pw + c + g.cols.before] = x[r * w + c];
        }
    }
    let mut y = Vec::new();
    for oy in 0..g.rows.out {
        for ox in 0..g.cols.out {
            let mut m = f32::NEG_INFINITY;
            for r in oy * sh..oy * sh + kh {
                for c in ox * sw..ox * sw + kw {
                    m = m.max(padded[r * pw + c]);
                }
            }
            y.push(m);
        }
    }
    y
}

#[test]
fn matches_the_padded_reference_for_assorted_windows() {
    let cases = [
        ((3, 3), (2, 2), 9, 7),
        ((3, 3), (1, 1), 5, 6),
        ((2, 3), (3, 1), 7, 5),
        ((5, 5), (1, 1), 4, 4),
        ((1, 1), (2, 3), 6, 7),
    ];
    for (i, &(kernel, stride, h, w)) in cases.iter().enumerate() {
        let p = Pool2d::new(kernel, stride).unwrap();
        let x = Tensor::uniform(
            [2, 3, h, w],
            -3.0,
            -1.0,
            &mut ChaCha8Rng::seed_from_u64(i as u64),
        )
        .unwrap();
        let (y, argmax) = pool(&x, &p);
        let xs = x.as_slice().unwrap();
        let mut want = Vec::new();
        for plane in xs.chunks(h * w) {
            want.extend(reference(plane, h, w, &p));
        }
        assert_eq!(
            y.to_vec(),
            want,
            "kernel {kernel:?} stride {stride:?} on {h} x {w}"
        );
        let per_plane = y.len() / 6;
        for (o, &a) in argmax.iter().enumerate() {
            assert_eq!(xs[(o / per_plane) * h * w + a as usize], y.to_vec()[o]);
        }
    }
}

#[test]
fn backward_routes_and_adds_up_overlapping_windows() {
    // 3x3 windows, stride 1, on a 3x3 plane: every window contains the centre, the maximum.
    let x = Tensor::from_vec([1, 1, 3, 3], vec![1., 2., 3., 4., 10., 5., 6., 7., 8.]).unwrap();
    let p = Pool2d::square(3, 1).unwrap();
    let (_, argmax) = pool(&x, &p);
    assert_eq!(argmax, vec![4; 9]);
    let dy = Tensor::from_vec([1, 1, 3, 3], (1..=9).map(|v| v as f32).collect()).unwrap();
    let mut dx = Tensor::full([1, 1, 3, 3], f32::NAN);
    maxpool2d_backward(&mut dx, &dy, &PoolIndices::from_host(argmax.clone()), &p).unwrap();
    assert_eq!(dx.to_vec(), vec![0., 0., 0., 0., 45., 0., 0., 0., 0.]);
}

#[test]
fn ties_go_to_the_first_maximum() {
    let x = Tensor::full([1, 1, 2, 2], 1.0);
    let (_, argmax) = pool(&x, &Pool2d::square(2, 2).unwrap());
    assert_eq!(argmax, vec![0]);
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let x = Tensor::uniform([4, 6, 11, 13], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let p = Pool2d::square(3, 2).unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let (y, argmax) = pool(&x, &p);
                let dy = Tensor::uniform(y.dims(), -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(10))
                    .unwrap();
                let mut dx = Tensor::zeros(x.shape().clone());
                maxpool2d_backward(&mut dx, &dy, &PoolIndices::from_host(argmax.clone()), &p)
                    .unwrap();
                let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (bits(&y), argmax, bits(&dx))
            })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn bad_arguments_name_the_op_and_the_shapes() {
    let p = Pool2d::square(3, 2).unwrap();
    let x = Tensor::zeros([2, 3, 8, 8]);
    let e = maxpool2d_forward(&mut Tensor::zeros([2, 3, 8, 8]), &x, &p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "maxpool2d_forward: y has shape (2, 3, 8, 8), expected (2, 3, 4, 4)"
    );
    let e = maxpool2d_forward(
        &mut Tensor::zeros([2, 3, 4, 4]),
        &Tensor::zeros([3, 8, 8]),
        &p,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "maxpool2d_forward: x has shape (3, 8, 8), expected rank 4 (N, C, H, W)"
    );
    let mut argmax = vec![0; 2 * 3 * 16];
    let backward = |dx_dims: [usize; 4], dy_dims: [usize; 4], argmax: &[u32]| {
        maxpool2d_backward(
            &mut Tensor::zeros(dx_dims),
            &Tensor::zeros(dy_dims),
            &PoolIndices::from_host(argmax.to_vec()),
            &p,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        backward([2, 3, 8, 8], [2, 3, 4, 5], &argmax),
        "maxpool2d_backward: dy has shape (2, 3, 4, 5), expected (2, 3, 4, 4)"
    );
    assert_eq!(
        backward([2, 3, 8, 8], [2, 3, 4, 4], &argmax[..5]),
        "maxpool2d_backward: argmax holds 5 indices, output (2, 3, 4, 4) has 96 values"
    );
    argmax[7] = 64;
    assert_eq!(
        backward([2, 3, 8, 8], [2, 3, 4, 4], &argmax),
        "maxpool2d_backward: argmax[7] = 64 is outside a 8 x 8 plane of dx (2, 3, 8, 8)"
    );
    let e = Pool2d::new((3, 0), (2, 2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Pool2d::new: kernel (3, 0) and stride (2, 2) must be at least 1"
    );
}

/// The public entry points on the emulated device: the indices stay there (the backward reads
/// them where the forward wrote them) and y, argmax and dx are the CPU's, bit for bit. Values
/// on a coarse grid make ties, and the pools include overlapping windows (up to nine per input),
/// a window taller than wide, and a stride larger than the window (inputs in no window get 0).
#[test]
fn emu_forward_and_backward_keep_the_indices_on_the_device_and_give_the_cpu_bits() {
    let emu = |t: &Tensor| crate::cuda::to_device(t, Device::CudaEmu).unwrap();
    let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let cases = [
        ([2, 3, 9, 7], Pool2d::square(3, 2).unwrap()),
        ([2, 2, 5, 6], Pool2d::square(3, 1).unwrap()),
        ([1, 2, 6, 7], Pool2d::new((3, 2), (2, 1)).unwrap()),
        ([1, 2, 7, 8], Pool2d::new((2, 2), (3, 3)).unwrap()),
    ];
    for (s, (dims, p)) in cases.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(20 + s as u64);
        let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let x = Tensor::from_vec(
            dims,
            x.to_vec().iter().map(|v| (v * 4.0).round() / 4.0).collect(),
        )
        .unwrap();
        let out = p.output_dims("test", &x).unwrap();
        let dy = Tensor::uniform(out, -1.0, 1.0, &mut rng).unwrap();

        let mut y = Tensor::zeros(out);
        let argmax = maxpool2d_forward(&mut y, &x, &p).unwrap();
        let mut dx = Tensor::zeros(dims);
        maxpool2d_backward(&mut dx, &dy, &argmax, &p).unwrap();

        let mut ey = emu(&Tensor::full(out, f32::NAN));
        let eargmax = maxpool2d_forward(&mut ey, &emu(&x), &p).unwrap();
        assert_eq!(eargmax.device(), Device::CudaEmu, "case {s}");
        assert_eq!(
            eargmax.to_host().unwrap(),
            argmax.to_host().unwrap(),
            "case {s}: argmax"
        );
        assert_eq!(bits(&ey), bits(&y), "case {s}: y");
        let mut edx = emu(&Tensor::full(dims, f32::NAN));
        maxpool2d_backward(&mut edx, &emu(&dy), &eargmax, &p).unwrap();
        assert_eq!(bits(&edx), bits(&dx), "case {s}: dx");

        let e = maxpool2d_backward(&mut edx, &emu(&dy), &argmax, &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "maxpool2d_backward: argmax is on cpu, the other tensors on cuda-emu"
        );
        let e = maxpool2d_backward(&mut dx, &dy, &eargmax, &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "maxpool2d_backward: argmax is on cuda-emu, the other tensors on cpu"
        );
    }
}
