//! Every convolution of a network preset, each pass by each algorithm, timed quickly: where a
//! training step's convolution time goes, layer by layer (criterion's `conv` bench is the careful
//! measurement; this one answers "which pass of which layer" in seconds).
//!
//! Run: `cargo bench -p benches --bench conv_layers -- [seed|small|tiny] [BATCH] [REPS] [ALGO]`
//! (defaults: small, 250, 5). Threads: rayon's default, or `RAYON_NUM_THREADS`.
//!
//! For each distinct layer shape (C -> K at side x side, and how many of them the network has),
//! and each pass (forward, backward-data, backward-weight) by every algorithm that computes it:
//! the fastest of REPS calls after one warm-up (the one least disturbed by other processes),
//! effective GFLOP/s (the direct convolution's arithmetic over the time), and the process CPU
//! time per call (all threads; it counts a waiting rayon worker's spinning). `*` marks what
//! `Conv2dAlgo::choose` picks. A fourth argument keeps only the algorithms whose names contain it.
//! On a CPU with AVX-512 BF16, one more row per pass: `bf16`, the `--precision bf16` kernels
//! (`conv2d/sliding/bf16.rs`), their GFLOP/s counting each BF16 product as an FMA's two.
//! Last, the network's totals per pass through `choose` (and in BF16), as one training step
//! spends them.

use std::time::Instant;

use kernels::conv2d::{
    bf16_available, conv2d_backward_data_in, conv2d_backward_weight_in, conv2d_forward_in,
    Conv2dAlgo, Conv2dDims, Conv2dGeom, Conv2dPass,
};
use kernels::precision::Precision;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

/// (widths, name) of the presets (trainer/src/cli.rs).
fn widths(preset: &str) -> [usize; 4] {
    match preset {
        "seed" => [128, 256, 512, 1024],
        "small" => [32, 64, 128, 256],
        "tiny" => [8, 16, 32, 64],
        other => panic!("conv_layers: unknown preset {other:?} (seed, small or tiny)"),
    }
}

/// Process CPU time (all threads) in seconds: the sum of each thread's time on a CPU, in
/// nanoseconds, from /proc/self/task/*/schedstat (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// (fastest wall seconds, CPU seconds per call) of `reps` calls of `f` after one warm-up. The
/// fastest call is the one least disturbed by other processes on a shared machine.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let cpu0 = cpu_seconds();
    let mut walls: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = (cpu_seconds() - cpu0) / reps as f64;
    walls.sort_by(f64::total_cmp);
    (walls[0], cpu)
}

fn main() {
    // `cargo bench` passes --bench; keep only our positional arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let preset = args.first().map_or("small", String::as_str);
    let n: usize = args.get(1).map_or(250, |v| v.parse().expect("BATCH"));
    let reps: usize = args.get(2).map_or(5, |v| v.parse().expect("REPS"));
    let only = args.get(3).map_or("", String::as_str);
    let w = widths(preset);
    let isa = kernels::simd::choice();
    println!(
        "conv_layers: preset {preset}, batch {n}, {reps} reps, {} threads; {}: kernels {} ({}); \
         FMA peak {:.0} GFLOP/s",
        rayon::current_num_threads(),
        kernels::simd::cpu_model(),
        isa.isa,
        isa.reason,
        kernels::simd::fma_peak(kernels::simd::Isa::available_all()[0])
    );
    // (cin, cout, side, count): each block has one cin -> w convolution and three w -> w.
    let mut layers = Vec::new();
    let mut cin = 3;
    for (i, &wi) in w.iter().enumerate() {
        let side = 32 >> i;
        layers.push((cin, wi, side, 1));
        layers.push((wi, wi, side, 3));
        cin = wi;
    }
    let geom = Conv2dGeom::SAME_3X3;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut totals = [0.0f64; 3];
    let mut bf16_totals = [0.0f64; 3];
    println!(
        "{:<22} {:<16} {:<10} {:>9} {:>8} {:>9}",
        "layer", "pass", "algo", "ms", "GFLOP/s", "cpu ms"
    );
    for (cin, cout, side, count) in layers {
        let x = Tensor::uniform([n, cin, side, side], -1.0, 1.0, &mut rng).unwrap();
        let weight = Tensor::uniform([cout, cin, 3, 3], -1.0, 1.0, &mut rng).unwrap();
        let d = Conv2dDims::new("conv_layers", x.dims(), weight.dims(), geom).unwrap();
        let dy = Tensor::uniform(d.y_dims(), -1.0, 1.0, &mut rng).unwrap();
        let mut y = Tensor::zeros(d.y_dims());
        let mut dx = Tensor::zeros(d.x_dims());
        let mut dweight = Tensor::zeros(d.weight_dims());
        let name = format!("{cin}->{cout} {side}x{side} (x{count})");
        let passes = [
            Conv2dPass::Forward,
            Conv2dPass::BackwardData,
            Conv2dPass::BackwardWeight,
        ];
        for (p, pass) in passes.into_iter().enumerate() {
            let chosen = Conv2dAlgo::choose(&d, pass);
            let run = |a: &Conv2dAlgo| a.computes(&d) && a.name().contains(only);
            // (name, precision, algorithm) of each row: the FP32 algorithms, then BF16.
            let mut rows: Vec<(String, Precision, Option<Conv2dAlgo>)> = Conv2dAlgo::ALL
                .into_iter()
                .filter(run)
                .map(|a| {
                    let star = if a == chosen { "*" } else { "" };
                    (format!("{}{star}", a.name()), Precision::Fp32, Some(a))
                })
                .collect();
            if bf16_available() && "bf16".contains(only) {
                rows.push(("bf16".into(), Precision::Bf16, None));
            }
            for (label, precision, a) in rows {
                let (wall, cpu) = time(reps, || match pass {
                    Conv2dPass::Forward => {
                        conv2d_forward_in(precision, a, &mut y, &x, &weight, geom).unwrap()
                    }
                    Conv2dPass::BackwardData => {
                        conv2d_backward_data_in(precision, a, &mut dx, &dy, &weight, geom).unwrap()
                    }
                    Conv2dPass::BackwardWeight => {
                        conv2d_backward_weight_in(precision, a, &mut dweight, &dy, &x, geom)
                            .unwrap()
                    }
                });
                if a == Some(chosen) {
                    totals[p] += wall * count as f64;
                }
                if precision == Precision::Bf16 {
                    bf16_totals[p] += wall * count as f64;
                }
                println!(
                    "{name:<22} {:<16} {:<10} {:>9.2} {:>8.1} {:>9.1}",
                    format!("{pass:?}"),
                    label,
                    wall * 1e3,
                    d.flops() as f64 / wall / 1e9,
                    cpu * 1e3
                );
            }
        }
    }
    for (what, t) in [("through choose", totals), ("in bf16", bf16_totals)] {
        // Nothing timed (a fourth argument left these rows out, or no BF16 on this CPU).
        if t.iter().all(|&t| t == 0.0) {
            continue;
        }
        println!(
            "total {what}, ms per step: forward {:.1}, backward-data {:.1}, backward-weight \
             {:.1} (backward / forward {:.2})",
            t[0] * 1e3,
            t[1] * 1e3,
            t[2] * 1e3,
            (t[1] + t[2]) / t[0]
        );
    }
}
