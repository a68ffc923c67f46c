//! Throughput of every CUDA kernel on GPU 0, at the seed network's sizes (batch 250): bytes/s for
//! the memory-bound kernels (the fewest bytes each must move: every input read once, every output
//! written once), FLOP/s for the GEMM and the three convolution passes. cuBLAS SGEMM (fp32, its
//! default math mode, no TF32) runs in the same groups as a yardstick: on 1024^3, and on the
//! GEMM shape each convolution pass is equivalent to (`cublas_equivalent`). The tensor-core
//! kernels (TF32 and BF16 operands, FP32 accumulation) run in a group of their own beside cuBLAS
//! `cublasGemmEx` in the same precision (`CUBLAS_COMPUTE_32F_FAST_TF32`; BF16 a and b), on
//! devices of compute capability 8.0 or more.
//!
//! Without a GPU (no driver, no device, or no NVRTC) every group is skipped with a message.
//! Each measurement launches `iters` times and synchronises once, so launch latency overlaps
//! with the work as it does in training.
//!
//! Run: `cargo bench -p benches --bench cuda`.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::CudaSlice;
use kernels::adam::{self, Adam};
use kernels::batchnorm::cuda::{
    BatchNormChannels, BatchNormEvalChannels, BatchNormSaved, BatchNormStatsBufs,
};
use kernels::batchnorm::{self, BatchNormConfig, StatsSource};
use kernels::conv2d::tc::{conv2d_backward_data_tc, conv2d_backward_weight_tc, conv2d_forward_tc};
use kernels::conv2d::{self, Conv2dDims, Conv2dGeom};
use kernels::cuda::gpu::{self, Gpu};
use kernels::cuda::Backend;
use kernels::gemm::cuda::DevOperand;
use kernels::gemm::tc::{gemm_bf16, gemm_tf32, TcOperand};
use kernels::gemm::{self, Trans};
use kernels::maxpool::{self, Pool2d};
use kernels::philox::MaskKey;
use kernels::precision::cuda::f32_to_bf16;
use kernels::precision::Bf16;
use kernels::sgd::{self, Sgd};
use kernels::softmax_ce::{self, TALLY_LEN};
use kernels::{add, dropblock, dropout, grad_norm, relu};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// GPU 0, or why there is none.
fn gpu() -> Result<&'static Gpu, String> {
    if !gpu::driver_present() {
        return Err("no CUDA driver on this machine".into());
    }
    if !gpu::nvrtc_present() {
        return Err("NVRTC is not installed or not on LD_LIBRARY_PATH".into());
    }
    Gpu::shared(0).map_err(|e| e.to_string())
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Times `f` as benchmark `id`: `iters` calls, then one synchronisation.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, g: &Gpu, mut f: impl FnMut()) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            g.synchronize().unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            g.synchronize().unwrap();
            start.elapsed()
        })
    });
}

/// `n` values uniform in [lo, hi), on the device.
fn random(g: &Gpu, n: usize, lo: f32, hi: f32, seed: u64) -> CudaSlice<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let host: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    g.upload(&host).unwrap()
}

/// Row-major c (m, n) = a (m, k) b (k, n) through cuBLAS (column-major): c^T = b^T a^T.
fn cublas_sgemm(
    blas: &CudaBlas,
    (m, n, k): (usize, usize, usize),
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
) {
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: 1.0f32,
        lda: n as i32,
        ldb: k as i32,
        beta: 0.0f32,
        ldc: n as i32,
    };
    // SAFETY: a holds m*k values, b k*n and c m*n, the sizes the configuration reads and writes.
    unsafe { blas.gemm(cfg, b, a, c) }.unwrap();
}

/// Row-major c (m, n) = a (m, k) b (k, n) through cublasGemmEx with FP32 accumulation and c:
/// TF32 from FP32 a and b (`bf16 == false`), or BF16 a and b (device addresses `a`, `b`, `c`).
fn cublas_gemm_ex(
    blas: &CudaBlas,
    (m, n, k): (usize, usize, usize),
    [a, b, c]: [u64; 3],
    bf16: bool,
) {
    use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
    let (ab_type, compute) = if bf16 {
        (
            cudaDataType::CUDA_R_16BF,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
        )
    } else {
        (
            cudaDataType::CUDA_R_32F,
            cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        )
    };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let ptr = |addr: u64| addr as *const std::ffi::c_void;
    // SAFETY: a holds m*k values, b k*n and c m*n of the types given, the sizes the call reads and
    // writes (c^T = b^T a^T in cuBLAS's column-major terms); alpha and beta outlive the call.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_N,
            cublasOperation_t::CUBLAS_OP_N,
            n as i32,
            m as i32,
            k as i32,
            (&alpha as *const f32).cast(),
            ptr(b),
            ab_type,
            n as i32,
            ptr(a),
            ab_type,
            k as i32,
            (&beta as *const f32).cast(),
            c as *mut std::ffi::c_void,
            cudaDataType::CUDA_R_32F,
            n as i32,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .unwrap();
}

/// The largest activation of the network: batch 250, 128 channels, 32 x 32.
const ACT: [usize; 4] = [250, 128, 32, 32];

fn elementwise(c: &mut Criterion, g: &Gpu) {
    let n: usize = ACT.iter().product();
    let (x, b) = (random(g, n, -1.0, 1.0, 1), random(g, n, -1.0, 1.0, 2));
    let mut y = g.alloc::<f32>(n).unwrap();
    let mut group = c.benchmark_group("cuda_elementwise_250x128x32x32");
    configure(&mut group);
    let key = MaskKey {
        seed: 7,
        step: 1,
        layer: 0,
    };
    // Bytes per value: inputs read plus outputs written, 4 bytes each (1 for a u8 mask).
    group.throughput(Throughput::Bytes(8 * n as u64));
    bench(&mut group, "relu_forward", g, || {
        relu::cuda::relu_forward(g, &mut y, &x).unwrap()
    });
    bench(&mut group, "dropout_apply", g, || {
        dropout::cuda::dropout_apply(g, &mut y, &x, 0.5, key).unwrap()
    });
    bench(&mut group, "scale_in_place", g, || {
        grad_norm::cuda::scale_in_place(g, &mut y, 0.999).unwrap()
    });
    group.throughput(Throughput::Bytes(12 * n as u64));
    bench(&mut group, "relu_backward", g, || {
        relu::cuda::relu_backward(g, &mut y, &b, &x).unwrap()
    });
    bench(&mut group, "add", g, || {
        add::cuda::add(g, &mut y, &x, &b).unwrap()
    });
    bench(&mut group, "add_assign", g, || {
        add::cuda::add_assign(g, &mut y, &b).unwrap()
    });
    group.throughput(Throughput::Bytes(4 * n as u64));
    bench(&mut group, "sum_of_squares", g, || {
        grad_norm::cuda::sum_of_squares(g, &x).unwrap();
    });
    // DropBlock (block 5, keep 0.9) on the same map: the mask written (1 byte a value) with its
    // scale, then applied.
    let (mut mask, mut scale) = (g.alloc::<u8>(n).unwrap(), g.alloc::<f32>(1).unwrap());
    group.throughput(Throughput::Bytes(n as u64));
    bench(&mut group, "dropblock_mask", g, || {
        dropblock::cuda::dropblock_mask(g, &mut mask, &mut scale, ACT, 5, 0.9, key).unwrap();
    });
    group.throughput(Throughput::Bytes(9 * n as u64));
    bench(&mut group, "dropblock_apply", g, || {
        dropblock::cuda::dropblock_apply(g, &mut y, &x, &mask, &scale).unwrap()
    });
    group.finish();
}

fn optimiser_loss_pool(c: &mut Criterion, g: &Gpu) {
    let mut group = c.benchmark_group("cuda_adam_softmax_maxpool");
    configure(&mut group);
    // Adam over the network's ~77.8 M parameters: w, m, v, g read, w, m, v written.
    let params = 77_800_000;
    let (mut w, mut m, mut v) = (
        random(g, params, -0.1, 0.1, 3),
        g.alloc::<f32>(params).unwrap(),
        g.alloc::<f32>(params).unwrap(),
    );
    let grad = random(g, params, -0.1, 0.1, 4);
    let cfg = Adam::default();
    group.throughput(Throughput::Bytes(28 * params as u64));
    bench(&mut group, "adam_update_77.8M", g, || {
        adam::cuda::adam_update(g, &mut w, &mut m, &mut v, &grad, &cfg, 10).unwrap()
    });
    // SGD with momentum, Nesterov and weight decay: w, buf, g read, w, buf written.
    let sgd = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
    };
    group.throughput(Throughput::Bytes(20 * params as u64));
    bench(&mut group, "sgd_update_77.8M", g, || {
        sgd::cuda::sgd_update(g, &mut w, &mut m, &grad, &sgd).unwrap()
    });
    drop((w, m, v, grad));

    // Softmax cross-entropy on the batch's logits: (250, 100).
    let (rows, classes) = (250, 100);
    let logits = random(g, rows * classes, -3.0, 3.0, 5);
    let labels: CudaSlice<u32> = g
        .upload(
            &(0..rows as u32)
                .map(|r| r % classes as u32)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let (mut probs, mut loss) = (
        g.alloc::<f32>(rows * classes).unwrap(),
        g.alloc::<f64>(rows).unwrap(),
    );
    let mut dlogits = g.alloc::<f32>(rows * classes).unwrap();
    group.throughput(Throughput::Bytes((8 * rows * classes + 12 * rows) as u64));
    bench(&mut group, "softmax_ce_forward_250x100", g, || {
        softmax_ce::cuda::softmax_ce_forward(g, &mut probs, &mut loss, &logits, &labels, classes)
            .unwrap()
    });
    group.throughput(Throughput::Bytes((8 * rows * classes + 4 * rows) as u64));
    bench(&mut group, "softmax_ce_backward_250x100", g, || {
        softmax_ce::cuda::softmax_ce_backward(g, &mut dlogits, &probs, &labels, classes).unwrap()
    });
    // The epoch's loss tally (one block): row losses, probabilities and labels read.
    let mut sums = g.alloc::<f64>(TALLY_LEN).unwrap();
    group.throughput(Throughput::Bytes((4 * rows * classes + 12 * rows) as u64));
    bench(&mut group, "softmax_ce_tally_250x100", g, || {
        softmax_ce::cuda::softmax_ce_tally(g, &mut sums, &loss, &probs, &labels, classes).unwrap()
    });

    // Max-pool 3x3 stride 2 SAME after block 1: (250, 128, 32, 32) -> (250, 128, 16, 16).
    let pool = Pool2d::square(3, 2).unwrap();
    let n: usize = ACT.iter().product();
    let out = n / 4;
    let x = random(g, n, -1.0, 1.0, 6);
    let (mut y, mut argmax) = (g.alloc::<f32>(out).unwrap(), g.alloc::<u32>(out).unwrap());
    let mut dx = g.alloc::<f32>(n).unwrap();
    group.throughput(Throughput::Bytes((4 * n + 8 * out) as u64));
    bench(&mut group, "maxpool_forward_block1", g, || {
        maxpool::cuda::maxpool_forward(g, &mut y, &mut argmax, &x, ACT, &pool).unwrap()
    });
    bench(&mut group, "maxpool_backward_block1", g, || {
        maxpool::cuda::maxpool_backward(g, &mut dx, &y, &argmax, ACT, &pool).unwrap()
    });
    group.finish();
}

fn batchnorm(c: &mut Criterion, g: &Gpu) {
    let n: usize = ACT.iter().product();
    let ch = ACT[1];
    let x = random(g, n, -1.0, 3.0, 8);
    let dy = random(g, n, -1.0, 1.0, 9);
    let (gamma, beta) = (random(g, ch, 0.5, 1.5, 10), random(g, ch, -0.5, 0.5, 11));
    let (mut rm, mut rv) = (g.alloc::<f32>(ch).unwrap(), random(g, ch, 0.5, 2.0, 12));
    let (mut mean, mut inv) = (g.alloc::<f32>(ch).unwrap(), g.alloc::<f32>(ch).unwrap());
    let (mut dgamma, mut dbeta) = (g.alloc::<f32>(ch).unwrap(), g.alloc::<f32>(ch).unwrap());
    let (mut y, mut dx) = (g.alloc::<f32>(n).unwrap(), g.alloc::<f32>(n).unwrap());
    let cfg = BatchNormConfig::default();
    let mut group = c.benchmark_group("cuda_batchnorm_250x128x32x32");
    configure(&mut group);
    // The floor: x read once and y written once (the kernel reads x three times).
    group.throughput(Throughput::Bytes(8 * n as u64));
    bench(&mut group, "forward_train", g, || {
        batchnorm::cuda::batchnorm_forward_train(
            g,
            &mut y,
            BatchNormStatsBufs {
                mean: &mut mean,
                inv_std: &mut inv,
            },
            &x,
            &ACT,
            BatchNormChannels {
                gamma: &gamma,
                beta: &beta,
                running_mean: &mut rm,
                running_var: &mut rv,
            },
            &cfg,
        )
        .unwrap()
    });
    bench(&mut group, "forward_eval", g, || {
        batchnorm::cuda::batchnorm_forward_eval(
            g,
            &mut y,
            BatchNormStatsBufs {
                mean: &mut mean,
                inv_std: &mut inv,
            },
            &x,
            &ACT,
            BatchNormEvalChannels {
                gamma: &gamma,
                beta: &beta,
                running_mean: &rm,
                running_var: &rv,
            },
            cfg.eps,
        )
        .unwrap()
    });
    // dy and x read once, dx written once.
    group.throughput(Throughput::Bytes(12 * n as u64));
    bench(&mut group, "backward", g, || {
        batchnorm::cuda::batchnorm_backward(
            g,
            &mut dx,
            &mut dgamma,
            &mut dbeta,
            &dy,
            &x,
            &ACT,
            &gamma,
            BatchNormSaved {
                mean: &mean,
                inv_std: &inv,
                source: StatsSource::Batch,
            },
        )
        .unwrap()
    });
    group.finish();
}

fn gemm(c: &mut Criterion, g: &Gpu, blas: Option<&CudaBlas>) {
    let mut group = c.benchmark_group("cuda_gemm");
    configure(&mut group);
    // The 1024^3 square, and the first fully-connected layer's forward at batch 250.
    for (name, (m, n, k)) in [
        ("1024x1024x1024", (1024usize, 1024usize, 1024usize)),
        ("fc1_250x4096x4096", (250, 4096, 4096)),
    ] {
        let a = random(g, m * k, -1.0, 1.0, 13);
        let b = random(g, k * n, -1.0, 1.0, 14);
        let mut out = g.alloc::<f32>(m * n).unwrap();
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        bench(&mut group, &format!("sgemm_{name}"), g, || {
            let op = |data, rows, cols| DevOperand::<Gpu> {
                data,
                rows,
                cols,
                trans: Trans::No,
            };
            gemm::cuda::sgemm(g, 1.0, op(&a, m, k), op(&b, k, n), 0.0, &mut out).unwrap()
        });
        if let Some(blas) = blas {
            bench(&mut group, &format!("cublas_{name}"), g, || {
                cublas_sgemm(blas, (m, n, k), &a, &b, &mut out)
            });
        }
    }
    group.finish();
}

/// The three passes of a 3x3 SAME convolution `ch` -> `ch` on a batch of 250 `side` x `side`
/// maps, and cuBLAS on the forward's equivalent GEMM: (K, C*9) x (C*9, N*OH*OW).
fn conv(c: &mut Criterion, g: &Gpu, blas: Option<&CudaBlas>, name: &str, ch: usize, side: usize) {
    let geom = Conv2dGeom::SAME_3X3;
    let (xd, wd) = ([250, ch, side, side], [ch, ch, 3, 3]);
    let d = Conv2dDims::new("bench", &xd, &wd, geom).unwrap();
    let x = random(g, xd.iter().product(), -1.0, 1.0, 15);
    let w = random(g, wd.iter().product(), -1.0, 1.0, 16);
    let dy = random(g, d.y_dims().iter().product(), -1.0, 1.0, 17);
    let mut y = g.alloc::<f32>(d.y_dims().iter().product()).unwrap();
    let mut dx = g.alloc::<f32>(xd.iter().product()).unwrap();
    let mut dw = g.alloc::<f32>(wd.iter().product()).unwrap();
    let mut group = c.benchmark_group(format!("cuda_conv2d_{name}"));
    configure(&mut group);
    group.throughput(Throughput::Elements(d.flops()));
    bench(&mut group, "forward", g, || {
        conv2d::cuda::conv2d_forward(g, &mut y, &x, &w, &xd, &wd, geom).unwrap()
    });
    bench(&mut group, "backward_data", g, || {
        conv2d::cuda::conv2d_backward_data(g, &mut dx, &dy, &w, &xd, &wd, geom).unwrap()
    });
    bench(&mut group, "backward_weight", g, || {
        conv2d::cuda::conv2d_backward_weight(g, &mut dw, &dy, &x, &xd, &wd, geom).unwrap()
    });
    drop((dx, dw));
    if let Some(blas) = blas {
        // The forward as an explicit GEMM: (K, C*9) x (C*9, N*OH*OW), on a stored column matrix.
        let (m, k, n) = (d.k, d.c * d.kh * d.kw, d.n * d.oh * d.ow);
        let col = random(g, k * n, -1.0, 1.0, 18);
        let mut out = g.alloc::<f32>(m * n).unwrap();
        bench(&mut group, "cublas_equivalent", g, || {
            cublas_sgemm(blas, (m, n, k), &w, &col, &mut out)
        });
    }
    group.finish();
}

/// The tensor-core GEMMs (TF32 from FP32 operands, BF16 operands) on the FP32 group's shapes and
/// the convolution forward's equivalent GEMM at block 1, the tensor-core convolution forward at
/// blocks 1 and 3, and cublasGemmEx in the same precision beside each GEMM.
fn tensor_cores(c: &mut Criterion, g: &Gpu, blas: Option<&CudaBlas>) {
    let sm: u32 = g.arch().trim_start_matches("sm_").parse().unwrap_or(0);
    if sm < 80 {
        eprintln!(
            "tensor-core benches skipped: {} has no sm_80 mma.sync",
            g.arch()
        );
        return;
    }
    let to_bf16 = |x: &CudaSlice<f32>| {
        let mut h = g.alloc::<Bf16>(g.len(x)).unwrap();
        f32_to_bf16(g, &mut h, x).unwrap();
        h
    };
    let mut group = c.benchmark_group("cuda_tensor_cores");
    configure(&mut group);
    for (name, (m, n, k)) in [
        ("1024x1024x1024", (1024usize, 1024usize, 1024usize)),
        ("fc1_250x4096x4096", (250, 4096, 4096)),
        ("conv_block1_gemm_128x256000x1152", (128, 256_000, 1152)),
    ] {
        let a = random(g, m * k, -1.0, 1.0, 19);
        let b = random(g, k * n, -1.0, 1.0, 20);
        let (a16, b16) = (to_bf16(&a), to_bf16(&b));
        let mut out = g.alloc::<f32>(m * n).unwrap();
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        bench(&mut group, &format!("tf32_{name}"), g, || {
            let op = |data, rows, cols| DevOperand::<Gpu> {
                data,
                rows,
                cols,
                trans: Trans::No,
            };
            gemm_tf32(g, 1.0, op(&a, m, k), op(&b, k, n), 0.0, &mut out).unwrap()
        });
        bench(&mut group, &format!("bf16_{name}"), g, || {
            let op = |data, rows, cols| TcOperand::<Gpu, Bf16> {
                data,
                rows,
                cols,
                trans: Trans::No,
            };
            gemm_bf16(g, 1.0, op(&a16, m, k), op(&b16, k, n), 0.0, &mut out).unwrap()
        });
        if let Some(blas) = blas {
            let c_addr = g.addr(&out);
            bench(&mut group, &format!("cublas_tf32_{name}"), g, || {
                cublas_gemm_ex(blas, (m, n, k), [g.addr(&a), g.addr(&b), c_addr], false)
            });
            bench(&mut group, &format!("cublas_bf16_{name}"), g, || {
                cublas_gemm_ex(blas, (m, n, k), [g.addr(&a16), g.addr(&b16), c_addr], true)
            });
        }
    }
    for (name, ch, side) in [
        ("block1_n250_c128_32x32", 128, 32),
        ("block3_n250_c512_8x8", 512, 8),
    ] {
        let geom = Conv2dGeom::SAME_3X3;
        let (xd, wd) = ([250, ch, side, side], [ch, ch, 3, 3]);
        let d = Conv2dDims::new("bench", &xd, &wd, geom).unwrap();
        let x = random(g, xd.iter().product(), -1.0, 1.0, 21);
        let w = random(g, wd.iter().product(), -1.0, 1.0, 22);
        let (x16, w16) = (to_bf16(&x), to_bf16(&w));
        let mut y = g.alloc::<f32>(d.y_dims().iter().product()).unwrap();
        group.throughput(Throughput::Elements(d.flops()));
        bench(
            &mut group,
            &format!("conv2d_forward_tf32_{name}"),
            g,
            || conv2d_forward_tc(g, None, &mut y, &x, &w, &xd, &wd, geom).unwrap(),
        );
        bench(
            &mut group,
            &format!("conv2d_forward_bf16_{name}"),
            g,
            || conv2d_forward_tc(g, None, &mut y, &x16, &w16, &xd, &wd, geom).unwrap(),
        );
        // The backward passes: the same FLOPs, so each compares with the forward and with
        // cublasGemmEx on block 1's forward as a GEMM above (dweight accumulates across runs).
        let dy = random(g, d.y_dims().iter().product(), -1.0, 1.0, 23);
        let dy16 = to_bf16(&dy);
        let mut dx = g.alloc::<f32>(xd.iter().product()).unwrap();
        let mut dw = g.alloc::<f32>(wd.iter().product()).unwrap();
        bench(
            &mut group,
            &format!("conv2d_backward_data_tf32_{name}"),
            g,
            || conv2d_backward_data_tc(g, None, &mut dx, &dy, &w, &xd, &wd, geom).unwrap(),
        );
        bench(
            &mut group,
            &format!("conv2d_backward_data_bf16_{name}"),
            g,
            || conv2d_backward_data_tc(g, None, &mut dx, &dy16, &w16, &xd, &wd, geom).unwrap(),
        );
        bench(
            &mut group,
            &format!("conv2d_backward_weight_tf32_{name}"),
            g,
            || conv2d_backward_weight_tc(g, None, &mut dw, &dy, &x, &xd, &wd, geom).unwrap(),
        );
        bench(
            &mut group,
            &format!("conv2d_backward_weight_bf16_{name}"),
            g,
            || conv2d_backward_weight_tc(g, None, &mut dw, &dy16, &x16, &xd, &wd, geom).unwrap(),
        );
    }
    group.finish();
}

fn cuda(c: &mut Criterion) {
    let g = match gpu() {
        Ok(g) => g,
        Err(why) => {
            eprintln!("cuda benches skipped: {why}");
            return;
        }
    };
    eprintln!(
        "cuda benches on {} ({})",
        g.name().unwrap_or_default(),
        g.arch()
    );
    // SAFETY: only probes for the cuBLAS library.
    let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Some(CudaBlas::new(g.stream().clone()).unwrap())
    } else {
        eprintln!("cuBLAS not found: the yardsticks are skipped");
        None
    };
    elementwise(c, g);
    optimiser_loss_pool(c, g);
    batchnorm(c, g);
    gemm(c, g, blas.as_ref());
    conv(c, g, blas.as_ref(), "block1_n250_c128_32x32", 128, 32);
    conv(c, g, blas.as_ref(), "block3_n250_c512_8x8", 512, 8);
    tensor_cores(c, g, blas.as_ref());
}

criterion_group!(benches, cuda);
criterion_main!(benches);
