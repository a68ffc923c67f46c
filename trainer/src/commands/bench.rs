//! `trainer bench`: training-step and inference throughput of a network size on random input.
//!
//! The network and the optimizer are built from the `train` defaults (the seed's recipe: Adam,
//! learning rate 5e-4, clipping at norm 100, dropout and DropBlock active) with the `--preset`,
//! `--widths` and `--hidden` of the command line. One untimed warm-up step of each kind, then
//! `--steps` timed training steps (forward, loss, backward, clip and update, as `train` does)
//! and `--steps` timed inference batches (forward in evaluation mode). With `--profile`, `--steps`
//! more training steps are profiled layer by layer.
//!
//! On a CUDA device launches are asynchronous: each timed step or batch ends by waiting for the
//! device, and the loss stays on the device until all steps are done, so a step's time is the
//! device's work.
//!
//! Effective GFLOP/s counts the network's arithmetic ([`ResNet::forward_flops_per_image`], a
//! training step as three forwards), not whatever the code happens to execute. On the CPU the
//! benchmark first prints the CPU's name, the instruction set its hand-written kernels run
//! ([`kernels::simd`]) and the FMA peak of all threads measured by a short loop (measured again
//! after the timed steps, the higher kept), and gives each GFLOP/s figure as a share of that
//! peak. Unless `--conv-algo` pins one or `--conv-calibration
//! off` asks for the fixed rule, the convolutions' algorithms are calibrated on this machine
//! (`kernels::conv2d::calibrate`), as `train`, `eval` and `predict` do: measured during the
//! warm-up step the first time, read from the cache file afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kernels::softmax_ce::LossTally;
use nn_layers::profile::{self, LayerKind, Pass, Profile};
use nn_layers::{into_device, ForwardCtx, SoftmaxCrossEntropy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::{alloc, Device, Tensor};

use crate::cli::{BenchArgs, Cli, Command};
use crate::config::{PrecisionKind, TrainConfig};
use crate::memory::{explain_out_of_memory, MemoryUse};
use crate::model::{ResNet, IMAGE_CHANNELS, IMAGE_SIDE};
use crate::optim::Optimizer;
use crate::state::{self, RunState};

/// Classes of the random labels (CIFAR-100's).
const CLASSES: usize = 100;
/// The epoch whose regularisers the benchmark uses: the second, where DropBlock's keep
/// probability has dropped below 1 and its masks are drawn, as in most of a run.
const EPOCH: u64 = 1;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let device = super::setup_runtime(&args.runtime)?;
    let cfg = bench_config(args)?;
    cfg.run.precision.check_device(device)?;
    let cpu_bf16 = !device.is_cuda() && cfg.run.precision == PrecisionKind::Bf16;
    if cpu_bf16 && args.conv_algo.pinned().is_some() {
        return Err(crate::Error::invalid(
            "invalid setting",
            "--conv-algo pins the CPU's FP32 convolution algorithms; --precision bf16 runs its own \
             kernels (the BF16 sliding convolution); leave --conv-algo at auto or use --precision \
             fp32",
        )
        .into());
    }
    let mut bench = Bench::new(&cfg, args, device)?;
    let w = cfg.model.widths;
    println!(
        "bench: widths {}/{}/{}/{}, hidden {}, {} parameters, batch {}, {device}, precision {}, \
         {} threads, conv {}",
        w[0],
        w[1],
        w[2],
        w[3],
        cfg.model.hidden,
        bench.model.param_count(),
        args.batch_size,
        kernels::precision::Precision::from(cfg.run.precision).name(),
        rayon::current_num_threads(),
        args.conv_algo
            .to_possible_value()
            .map_or("?".into(), |v| v.get_name().to_string())
    );
    let flops = bench.model.forward_flops_per_image() as f64;
    println!(
        "forward: {:.3} GFLOP per image (a training step counts 3x)",
        flops / 1e9
    );
    let peak = (!device.is_cuda()).then(|| {
        let (line, peak) = cpu_line();
        println!("{line}");
        peak
    });
    if cpu_bf16 {
        println!(
            "conv: the BF16 sliding kernels (vdpbf16ps) for every 3x3 convolution, no calibration"
        );
    } else if !device.is_cuda()
        && args.conv_algo.pinned().is_none()
        && kernels::conv2d::calibrate::calibration()
    {
        // The warm-up step measures each new convolution's algorithms (see
        // kernels::conv2d::calibrate); the timed steps run the fastest.
        println!(
            "conv: calibrated on this machine, cache {}",
            kernels::conv2d::calibrate::cache_file()
                .map_or("none (no cache directory)".into(), |f| f
                    .display()
                    .to_string())
        );
    } else if !device.is_cuda() && args.conv_algo.pinned().is_none() {
        println!("conv: the fixed rule (Conv2dAlgo::choose), calibration off");
    }

    let step_at = format!("a training step at --batch-size {}", args.batch_size);
    (bench.train_step())
        .map_err(|e| explain_out_of_memory(e, &step_at, device))
        .context("warm-up training step")?;
    let before = MemoryCounters::now();
    let train = time(args.steps, || bench.train_step())?;
    let peak = peak.map(remeasure_peak);
    report(
        "training",
        "steps",
        &train,
        args.batch_size,
        3.0 * flops,
        peak.map(|p| (p, cpu_bf16)),
    );
    println!("{}", MemoryCounters::now().since(&before, train.len()));
    let (bytes, took) = bench.time_checkpoint()?;
    println!(
        "checkpoint (model and optimizer state, as train writes last.safetensors): {:.1} MB \
         written in {:.2} s, {:.2} median training steps",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        took.as_secs_f64() / median(&train).as_secs_f64()
    );
    if args.profile {
        // Steps of their own, so that the timing of a profile (waits for a GPU around every
        // layer) never shows in the median above.
        start_profile(device);
        let profiled = time(args.steps, || bench.train_step());
        let p = profile::finish().expect("a profile was started above");
        print!("{}", profile_table(&p, &profiled?, device));
    }
    bench.check_tallied_loss()?;

    let infer_at = format!("inference at --batch-size {}", args.batch_size);
    (bench.infer())
        .map_err(|e| explain_out_of_memory(e, &infer_at, device))
        .context("warm-up inference batch")?;
    let inference = time(args.steps, || bench.infer())?;
    let peak = peak.map(remeasure_peak);
    report(
        "inference",
        "batches",
        &inference,
        args.batch_size,
        flops,
        peak.map(|p| (p, cpu_bf16)),
    );

    match MemoryUse::now(device).peak_rss_mib {
        Some(mib) => println!("peak memory (VmHWM): {mib:.0} MiB"),
        None => println!("peak memory: unavailable (no /proc/self/status VmHWM)"),
    }
    Ok(())
}

/// The `train` defaults with the benchmark's network size.
fn bench_config(args: &BenchArgs) -> anyhow::Result<TrainConfig> {
    let defaults = match Cli::try_parse_from(["trainer", "train"])?.command {
        Command::Train(a) => a,
        _ => unreachable!("parsed the train subcommand"),
    };
    let mut cfg = defaults.config()?;
    cfg.model = args.model.config()?;
    cfg.run.precision = args.runtime.precision.unwrap_or_default();
    Ok(cfg)
}

/// The network, its optimizer and one random batch on the device, trained on and run again and
/// again.
struct Bench<'a> {
    cfg: &'a TrainConfig,
    model: ResNet,
    optimizer: Optimizer,
    /// (N, 3, 32, 32) uniform in [-1, 1], on the device.
    x: Tensor,
    labels: Vec<u32>,
    /// The loss stays on the device, in a tally as `train` keeps it, and is read once at the
    /// end: a step reads back only the optimizer's gradient sums, and ends by waiting for the
    /// device, so that its time is the device's work and not the time to queue it.
    tally: LossTally,
    /// Training steps done (keys the masks).
    step: u64,
    device: Device,
}

impl<'a> Bench<'a> {
    /// `cfg`'s network with the regularisers of epoch [`EPOCH`] and a batch of `--batch-size`
    /// random images, on `device`.
    fn new(cfg: &'a TrainConfig, args: &BenchArgs, device: Device) -> anyhow::Result<Self> {
        let spec = state::net_spec(cfg, CLASSES, EPOCH);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
        let mut model = ResNet::new(&spec, &mut rng)?;
        model.pin_conv_algo(args.conv_algo.pinned());
        model.set_precision(cfg.run.precision.into());
        let mut optimizer = Optimizer::new(cfg.optimizer.rule, &mut model);
        let n = args.batch_size;
        let dims = [n, IMAGE_CHANNELS, IMAGE_SIDE, IMAGE_SIDE];
        let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng)?;
        let labels: Vec<u32> = (0..n).map(|i| (i % CLASSES) as u32).collect();
        let moved = (model.to_device(device).map_err(crate::Error::from))
            .and_then(|()| optimizer.to_device(&mut model, device));
        let what = "the model and its optimizer state";
        moved.map_err(|e| explain_out_of_memory(e.into(), what, device))?;
        Ok(Bench {
            cfg,
            model,
            optimizer,
            x: into_device(x, device)?,
            labels,
            tally: LossTally::new(device, 0.0, 0)?,
            step: 0,
            device,
        })
    }

    /// One training step as `train` takes it (forward, loss, backward, clip and update), ending
    /// with a wait for the device.
    fn train_step(&mut self) -> anyhow::Result<()> {
        let ctx = ForwardCtx::train(self.cfg.run.seed, self.step);
        let (logits, cache) = self.model.forward(self.x.clone(), ctx)?;
        let ce = SoftmaxCrossEntropy.forward_tallied(&logits, &self.labels, &mut self.tally)?;
        if self.tally.is_host() {
            // Free to read on the CPU: a diverged step is named at once.
            let loss = self.tally.read()?.last_loss;
            anyhow::ensure!(loss.is_finite(), "step {}: the loss is {loss}", self.step);
        }
        let dlogits = SoftmaxCrossEntropy.backward(ce)?;
        self.model.backward(&dlogits, cache)?;
        let (lr, clip) = (
            self.cfg.optimizer.lr as f32,
            self.cfg.optimizer.clip_norm as f32,
        );
        {
            let _timer = profile::timed(LayerKind::Optimizer, Pass::Update);
            self.optimizer.step(&mut self.model, lr, clip)?;
        }
        kernels::cuda::synchronize(self.device)?;
        self.step += 1;
        Ok(())
    }

    /// Writes the model and its optimizer state as `train` writes `last.safetensors` (host
    /// copies, then a temporary file, fsync and rename) into a temporary directory of the
    /// system's; returns the file's size in bytes and the time the write took.
    fn time_checkpoint(&mut self) -> anyhow::Result<(u64, Duration)> {
        let dir = tempfile::tempdir().context("a temporary directory for the checkpoint")?;
        let path = dir.path().join("last.safetensors");
        let names: Vec<String> = (0..CLASSES).map(|c| format!("class_{c}")).collect();
        let (model, optimizer) = (&mut self.model, Some(&mut self.optimizer));
        let start = Instant::now();
        state::save(&path, model, optimizer, self.cfg, &names, &RunState::new())?;
        let took = start.elapsed();
        let bytes = std::fs::metadata(&path)
            .with_context(|| path.display().to_string())?
            .len();
        Ok((bytes, took))
    }

    /// The one read of the loss on a device: the sum of every step's must be finite.
    fn check_tallied_loss(&self) -> anyhow::Result<()> {
        let tallied = self.tally.read()?;
        anyhow::ensure!(
            tallied.loss_sum.is_finite(),
            "the loss of a training step is not finite (the sum of the {} steps' is {})",
            self.step,
            tallied.loss_sum
        );
        Ok(())
    }

    /// One inference batch (forward in evaluation mode), ending with a wait for the device.
    fn infer(&mut self) -> anyhow::Result<()> {
        self.model.forward(self.x.clone(), ForwardCtx::EVAL)?;
        kernels::cuda::synchronize(self.device)?;
        Ok(())
    }
}

/// Runs `f` `times` times; the duration of each run.
fn time(times: u64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Duration>> {
    (0..times)
        .map(|_| {
            let start = Instant::now();
            f().map(|()| start.elapsed())
        })
        .collect()
}

/// Prints images/s over all runs, the median run and effective GFLOP/s, with its share of the
/// CPU's FMA peak (GFLOP/s) when there is one (and whether the products ran in BF16).
fn report(
    what: &str,
    units: &str,
    runs: &[Duration],
    batch: usize,
    flops_per_image: f64,
    peak: Option<(f64, bool)>,
) {
    let total: f64 = runs.iter().map(Duration::as_secs_f64).sum();
    let images_per_s = (runs.len() * batch) as f64 / total;
    let gflops = images_per_s * flops_per_image / 1e9;
    let share = peak.map_or(String::new(), |(p, bf16)| {
        // A BF16 product instruction does twice an FP32 FMA's work: the FP32 peak is passed.
        // Winograd convolutions do fewer products than the direct ones counted, so the share
        // can pass 100% where they run.
        let of = if bf16 {
            "the FP32 FMA peak; BF16 products reach up to 2x it"
        } else {
            "the FMA peak, products counted as direct convolutions do them"
        };
        format!(" ({:.0}% of {of})", 100.0 * gflops / p)
    });
    println!(
        "{what}: {} {units}, median {:.3} s each, {images_per_s:.1} images/s, {gflops:.1} \
         GFLOP/s{share}",
        runs.len(),
        median(runs).as_secs_f64(),
    );
}

/// The CPU line: the CPU's name, the instruction set of the hand-written kernels and why, and
/// the FMA peak every thread reaches together in a short loop with the widest vectors this CPU
/// has (returned in GFLOP/s, the yardstick of the "% of the FMA peak" figures).
fn cpu_line() -> (String, f64) {
    let choice = kernels::simd::choice();
    let widest = kernels::simd::Isa::available_all()[0];
    let peak = kernels::simd::fma_peak(widest);
    let line = format!(
        "cpu: {}; kernels {} ({}); FMA peak {peak:.0} GFLOP/s ({} threads, {} vectors)",
        kernels::simd::cpu_model(),
        choice.isa,
        choice.reason,
        rayon::current_num_threads(),
        widest
    );
    (line, peak)
}

/// The FMA peak: `earlier`, or a measurement now if higher, with a line saying so. On a
/// shared host the two threads of one measurement sometimes share a core (one read in a dozen
/// came out at half the peak on a 2-vCPU EPYC), which a single measurement cannot tell from a
/// slow machine; the best of the measurements around the timed steps is the fairer yardstick.
fn remeasure_peak(earlier: f64) -> f64 {
    let now = kernels::simd::fma_peak(kernels::simd::Isa::available_all()[0]);
    if now > 1.1 * earlier {
        println!("cpu: FMA peak measured again, {now:.0} GFLOP/s (the first read was low)");
        now
    } else {
        earlier
    }
}

/// Starts the profile of the steps on `device`: on a CUDA device every timed layer waits for
/// the device when it starts and ends, so that it is charged for its own kernels only.
fn start_profile(device: Device) {
    if device.is_cuda() {
        // A failed wait leaves the error with the device: the step's own wait at its end
        // reports it.
        profile::start_synchronized(move || {
            let _ = kernels::cuda::synchronize(device);
        });
    } else {
        profile::start();
    }
}

/// The per-step time of each layer kind, forward, backward and update, in milliseconds, with its
/// share of the step; "other" is what the step spent outside every timed layer (residual sums,
/// copies, the loop itself). `steps` are the profiled steps, run on `device`.
fn profile_table(p: &Profile, steps: &[Duration], device: Device) -> String {
    let per_step = |d: Duration| d.as_secs_f64() * 1e3 / steps.len() as f64;
    let step_ms = per_step(steps.iter().sum());
    let waits = if device.is_cuda() {
        format!(
            "; on {device} each layer waits for the device when it starts and ends, so these \
             steps are slower than the median above"
        )
    } else {
        String::new()
    };
    let mut t = format!(
        "profile: milliseconds per step ({} more steps{waits})\n\
         {:<10} {:>10} {:>10} {:>10} {:>10} {:>6}\n",
        steps.len(),
        "layer",
        "forward",
        "backward",
        "update",
        "total",
        "share"
    );
    let mut line = |name: &str, ms: [f64; 3]| {
        let total: f64 = ms.iter().sum();
        t += &format!(
            "{name:<10} {:>10.1} {:>10.1} {:>10.1} {total:>10.1} {:>5.1}%\n",
            ms[0],
            ms[1],
            ms[2],
            100.0 * total / step_ms
        );
    };
    for kind in LayerKind::ALL {
        line(
            kind.name(),
            Pass::ALL.map(|pass| per_step(p.get(kind, pass).0)),
        );
    }
    line("other", [0.0, 0.0, step_ms - per_step(p.total())]);
    line("step", [0.0, 0.0, step_ms]);
    t
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(runs: &[Duration]) -> Duration {
    let mut sorted = runs.to_vec();
    sorted.sort();
    let m = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[m]
    } else {
        (sorted[m - 1] + sorted[m]) / 2
    }
}

/// What a warm step costs the memory system: blocks the caching allocator had to take from the
/// system (0 when every large buffer is reused; see [`tensor_core::alloc`]) and the process's
/// minor page faults (each a fresh 4 KiB page the kernel had to map and clear).
#[derive(Debug, Clone, Copy)]
struct MemoryCounters {
    alloc: alloc::Stats,
    minor_faults: Option<u64>,
}

impl MemoryCounters {
    fn now() -> MemoryCounters {
        MemoryCounters {
            alloc: alloc::stats(),
            minor_faults: minor_faults(),
        }
    }

    /// A line with the counts per step since `before`.
    fn since(&self, before: &MemoryCounters, steps: usize) -> String {
        let per_step = |a: u64, b: u64| (a - b) as f64 / steps.max(1) as f64;
        let faults = match (self.minor_faults, before.minor_faults) {
            (Some(a), Some(b)) => format!("{:.0} minor page faults", per_step(a, b)),
            _ => "page faults unavailable (no /proc/self/stat)".to_string(),
        };
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        format!(
            "memory per step: {:.1} large blocks from the system, {:.1} reused, {faults}; \
             large blocks: {:.0} MiB live at the peak, {:.0} MiB held (live + cached)",
            per_step(self.alloc.system_allocs, before.alloc.system_allocs),
            per_step(self.alloc.reused, before.alloc.reused),
            mib(self.alloc.peak_live_bytes),
            mib(self.alloc.live_bytes + self.alloc.cached_bytes),
        )
    }
}

/// The process's minor page faults so far, from /proc/self/stat (Linux).
fn minor_faults() -> Option<u64> {
    parse_minflt(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Field 10 of /proc/self/stat, `minflt`: the 8th after the command name's closing parenthesis
/// (the name itself may hold spaces and parentheses).
fn parse_minflt(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(7)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(8)]), ms(3));
    }

    #[test]
    fn profile_table_has_a_row_per_kind_and_shares_of_the_step() {
        let mut p = Profile::default();
        p.add(LayerKind::Conv, Pass::Forward, Duration::from_millis(30));
        p.add(LayerKind::Conv, Pass::Backward, Duration::from_millis(50));
        let steps = [Duration::from_millis(100), Duration::from_millis(100)];
        let t = profile_table(&p, &steps, Device::Cpu);
        assert_eq!(t.lines().count(), 2 + LayerKind::ALL.len() + 2, "{t}");
        assert!(
            t.contains("conv             15.0       25.0        0.0       40.0  40.0%"),
            "{t}"
        );
        assert!(
            t.contains("other             0.0        0.0       60.0       60.0  60.0%"),
            "{t}"
        );
    }

    #[test]
    fn on_a_cuda_device_the_profile_says_its_steps_wait_around_every_layer() {
        let steps = [Duration::from_millis(10)];
        let cpu = profile_table(&Profile::default(), &steps, Device::Cpu);
        assert!(
            cpu.starts_with("profile: milliseconds per step (1 more steps)\n"),
            "{cpu}"
        );
        let gpu = profile_table(&Profile::default(), &steps, Device::Cuda(0));
        assert!(
            gpu.starts_with(
                "profile: milliseconds per step (1 more steps; on cuda:0 each layer waits for \
                 the device when it starts and ends, so these steps are slower than the median \
                 above)\n"
            ),
            "{gpu}"
        );
    }

    #[test]
    fn minflt_is_the_tenth_field_even_with_a_strange_command_name() {
        let stat = "4242 (tr (a) iner) R 1 4242 4242 0 -1 4194560 31337 0 0 0 12 3 0 0 20 0 3";
        assert_eq!(parse_minflt(stat), Some(31337));
        assert_eq!(parse_minflt("4242 (trainer) R 1"), None);
    }
}
