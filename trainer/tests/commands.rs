//! The `trainer` binary's `synth`, `predict`, `eval`, `bench` and `download --archive`
//! subcommands on tiny inputs, and their refusals: a clear message and a non-zero exit, never a
//! panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cifar_data::augment::{augment_batch, Image};
use cifar_data::format::{read_records, IMAGE_BYTES};
use cifar_data::synth::SynthConfig;
use cifar_data::{Augment, Preprocess};
use clap::Parser;
use nn_layers::{ForwardCtx, SoftmaxCrossEntropy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;
use trainer::cli::{Cli, Command as Sub};
use trainer::commands::predict::{network_input, read_image};
use trainer::config::TrainConfig;
use trainer::evaluate::{evaluate, top_k};
use trainer::model::ResNet;
use trainer::state::{self, RunState};

/// Runs the binary with `args`.
fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .env("KERNELS_CONV_CALIBRATE", "0")
        .args(args)
        .output()
        .expect("the trainer binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts success, printing stderr otherwise; returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// Asserts a refusal: exit status 1, an `error:` line containing every one of `needles`, no panic.
fn refused(o: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "a panic is a bug:\n{err}");
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from:\n{err}");
    }
}

/// The `train` settings of `flags` (the tiny network on a small in-memory synthetic set).
fn config(flags: &str) -> TrainConfig {
    let line = format!("trainer train {flags}");
    match Cli::try_parse_from(line.split_whitespace())
        .unwrap()
        .command
    {
        Sub::Train(a) => a.config().unwrap(),
        other => panic!("parsed as {other:?}"),
    }
}

const TINY: &str = "--preset tiny --synth-train 200 --synth-test 100 --seed 7";

/// Writes a checkpoint of a freshly initialised network for `cfg` with `classes` classes (the
/// synthetic names, or `class_k` for another count); `model_widths` overrides the network
/// actually saved, to make a checkpoint that contradicts its own settings.
fn checkpoint(
    dir: &Path,
    cfg: &TrainConfig,
    classes: usize,
    model_widths: Option<[usize; 4]>,
) -> PathBuf {
    let mut spec = state::net_spec(cfg, classes, 0);
    if let Some(w) = model_widths {
        spec.widths = w;
    }
    let mut model = ResNet::new(&spec, &mut ChaCha8Rng::seed_from_u64(cfg.run.seed)).unwrap();
    let names: Vec<String> = if classes == 100 {
        cifar_data::synth::fine_names()
    } else {
        (0..classes).map(|c| format!("class_{c}")).collect()
    };
    let path = dir.join("ckpt.safetensors");
    state::save(&path, &mut model, None, cfg, &names, &RunState::new()).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_writes_a_loadable_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("synth");
    let out = ok(trainer(&[
        "synth",
        "--dir",
        s(&dir),
        "--train",
        "200",
        "--test",
        "50",
        "--seed",
        "3",
    ]));
    assert!(out.contains("200 training and 50 test images"), "{out}");
    let loaded = cifar_data::Dataset::load(&dir, cifar_data::Format::Cifar100).unwrap();
    assert_eq!((loaded.train.len(), loaded.test.len()), (200, 50));
    assert_eq!(loaded.fine_names, cifar_data::synth::fine_names());
    let generated = trainer::data::synthetic(&cifar_data::synth::SynthConfig {
        seed: 3,
        train: 200,
        test: 50,
    })
    .unwrap();
    assert_eq!(loaded.test.images(), generated.test.images());
    assert_eq!(loaded.train.fine(), generated.train.fine());
}

#[test]
fn predict_prints_the_top_classes_of_png_and_jpeg_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(TINY);
    let ckpt = checkpoint(tmp.path(), &cfg, 100, None);
    // A 40x24 gradient as PNG, the same as JPEG, and a 32x32 PNG with alpha.
    let gradient = image::RgbImage::from_fn(40, 24, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
    });
    let png = tmp.path().join("gradient.png");
    let jpeg = tmp.path().join("gradient.jpg");
    let rgba = tmp.path().join("alpha.png");
    gradient.save(&png).unwrap();
    gradient.save(&jpeg).unwrap();
    image::RgbaImage::from_fn(32, 32, |x, y| {
        image::Rgba([x as u8 * 8, 90, y as u8 * 8, 128])
    })
    .save(&rgba)
    .unwrap();

    let out = ok(trainer(&[
        "predict",
        "--checkpoint",
        s(&ckpt),
        "--top-k",
        "3",
        s(&png),
        s(&jpeg),
        s(&rgba),
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3 * 4, "{out}");

    // The same model in this process, on the same decoded input.
    let (mut model, _) = state::load_model(&ckpt).unwrap();
    let names = cifar_data::synth::fine_names();
    for (i, path) in [&png, &jpeg, &rgba].into_iter().enumerate() {
        let block = &lines[4 * i..4 * i + 4];
        assert_eq!(block[0], s(path));
        // The checkpoint's run sharpened its images (the default), so predict does too.
        let img = trainer::commands::predict::read_image(path).unwrap();
        let preprocess = Preprocess::from(cfg.data.preprocess);
        let x = Tensor::from_vec([1, 3, 32, 32], network_input(&img, preprocess)).unwrap();
        let (logits, _) = model.forward(x, ForwardCtx::EVAL).unwrap();
        let (_, softmax) = SoftmaxCrossEntropy.forward(&logits, &[0]).unwrap();
        let best = top_k(softmax.probs().as_slice().unwrap(), 3);
        let mut previous = f64::INFINITY;
        for (line, &class) in block[1..].iter().zip(&best) {
            let (pct, name) = line.trim().split_once("%  ").expect("'<p>%  <name>'");
            let pct: f64 = pct.trim().parse().unwrap();
            assert!((0.0..=100.0).contains(&pct) && pct <= previous, "{out}");
            previous = pct;
            assert_eq!(name, names[class], "{out}");
        }
    }
}

/// Longer than a screen: one run of `eval`, then its three outputs (the summary, the predictions
/// and the confusion matrix) checked in turn against the same evaluation in this process.
#[test]
fn eval_reports_the_metrics_of_evaluate_and_writes_csvs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(TINY);
    let ckpt = checkpoint(tmp.path(), &cfg, 100, None);
    let predictions = tmp.path().join("out/predictions.csv");
    let out = ok(trainer(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--batch-size",
        "32",
        "--predictions",
        s(&predictions),
    ]));

    // Without --data the checkpoint's own settings pick the data: 100 synthetic test images.
    let (mut model, loaded) = state::load_model(&ckpt).unwrap();
    let data = trainer::data::load(&loaded.config.data).unwrap();
    let expected = evaluate(&mut model, &data.test, 32, false, |_| {}).unwrap();
    assert_eq!(expected.count, 100);
    for line in [
        format!("test loss:   {:.6}", expected.loss),
        format!("top-1:       {:.2}%", 100.0 * expected.top1),
        format!("top-5:       {:.2}%", 100.0 * expected.top5),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }

    // One row per test image, probabilities summing to 1, the predicted class their argmax.
    let text = std::fs::read_to_string(&predictions).unwrap();
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(header[..3], ["index", "label", "predicted"]);
    assert_eq!(header[3..], cifar_data::synth::fine_names());
    let mut correct = 0;
    let mut n = 0;
    for (i, row) in rows.enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 103, "row {i}");
        assert_eq!(fields[0], i.to_string());
        assert_eq!(fields[1], data.test.fine()[i].to_string());
        let p: Vec<f32> = fields[3..].iter().map(|v| v.parse().unwrap()).collect();
        let sum: f64 = p.iter().map(|&v| v as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {i} sums to {sum}");
        assert_eq!(fields[2], top_k(&p, 1)[0].to_string(), "row {i}");
        correct += (fields[1] == fields[2]) as usize;
        n += 1;
    }
    assert_eq!(n, 100);
    assert_eq!(correct as f64 / 100.0, expected.top1);

    // The confusion matrix beside the checkpoint, class names as header, counts as evaluated.
    let confusion = std::fs::read_to_string(tmp.path().join("confusion.csv")).unwrap();
    let mut lines = confusion.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "label\\predicted,{}",
            cifar_data::synth::fine_names().join(",")
        )
    );
    for (row, want) in lines.zip(&expected.confusion) {
        let counts: Vec<u32> = row.split(',').skip(1).map(|v| v.parse().unwrap()).collect();
        assert_eq!(&counts, want);
    }
}

#[test]
fn eval_of_a_trained_checkpoint_reproduces_its_last_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(trainer(&[
        "train",
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--synth-train",
        "200",
        "--synth-test",
        "100",
        "--batch-size",
        "50",
        "--eval-batch-size",
        "40",
        "--out",
        s(&run),
    ]));
    let epochs: Vec<trainer::metrics::EpochRecord> =
        trainer::metrics::read(&run.join(trainer::metrics::METRICS_FILE)).unwrap();
    let last = epochs.last().expect("one row per epoch");
    assert_eq!(last.epoch, 2);
    // Another batch size than training's evaluation: in Mode::Eval each image is on its own.
    let out = ok(trainer(&[
        "eval",
        "--checkpoint",
        s(&run.join("last.safetensors")),
        "--batch-size",
        "64",
    ]));
    for line in [
        format!("test loss:   {:.6}", last.test_loss),
        format!("top-1:       {:.2}%", 100.0 * last.test_top1),
        format!("top-5:       {:.2}%", 100.0 * last.test_top5),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
}

#[test]
fn eval_reads_the_dataset_given_by_flags_over_the_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(tmp.path(), &config(TINY), 100, None);
    let dir = tmp.path().join("synth");
    ok(trainer(&[
        "synth",
        "--dir",
        s(&dir),
        "--train",
        "10",
        "--test",
        "30",
    ]));
    let confusion = tmp.path().join("c.csv");
    let out = ok(trainer(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--data",
        s(&dir),
        "--dataset",
        "synthetic",
        "--confusion",
        s(&confusion),
    ]));
    assert!(out.contains("test images: 30"), "{out}");
    let total: u32 = std::fs::read_to_string(&confusion)
        .unwrap()
        .lines()
        .skip(1)
        .flat_map(|row| {
            row.split(',')
                .skip(1)
                .map(|v| v.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(total, 30);
}

/// The top `k` lines `predict` prints for the input x (1, 3, 32, 32) through `model`.
fn top_lines(model: &mut ResNet, x: Vec<f32>, k: usize) -> Vec<String> {
    let x = Tensor::from_vec([1, 3, 32, 32], x).unwrap();
    let (logits, _) = model.forward(x, ForwardCtx::EVAL).unwrap();
    let (_, softmax) = SoftmaxCrossEntropy.forward(&logits, &[0]).unwrap();
    let p = softmax.probs().as_slice().unwrap().to_vec();
    let names = cifar_data::synth::fine_names();
    top_k(&p, k)
        .into_iter()
        .map(|c| format!("  {:>6.2}%  {}", 100.0 * p[c], names[c]))
        .collect()
}

/// A run records its preprocessing in config.toml and in its checkpoint's settings, and `eval`
/// and `predict` of the checkpoint apply it with no flag: eval gives the metrics of the test set
/// preprocessed by the library (and reproduces the run's last epoch), predict the probabilities
/// of the image preprocessed by the library; a checkpoint trained without sharpening is used
/// without it.
#[test]
fn eval_and_predict_apply_the_preprocessing_the_checkpoint_was_trained_with() {
    let tmp = tempfile::tempdir().unwrap();
    // Pseudo-random pixels: sharpening changes them a lot.
    let noisy = tmp.path().join("noisy.png");
    image::RgbImage::from_fn(32, 32, |x, y| {
        let v = |k: u32| ((x * 37 + y * 101 + k).wrapping_mul(2_654_435_761) >> 24) as u8;
        image::Rgb([v(1), v(2), v(3)])
    })
    .save(&noisy)
    .unwrap();
    let raw = trainer::data::synthetic(&SynthConfig {
        seed: 0,
        train: 200,
        test: 100,
    })
    .unwrap();
    for (switch, preprocess) in [("on", Preprocess::Sharpen), ("off", Preprocess::None)] {
        let run = tmp.path().join(switch);
        ok(trainer(&[
            "train",
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--synth-train",
            "200",
            "--synth-test",
            "100",
            "--batch-size",
            "50",
            "--sharpen",
            switch,
            "--out",
            s(&run),
        ]));
        let recorded = format!("preprocess = \"{}\"", preprocess.name());
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(config.contains(&recorded), "{config}");
        let last = run.join("last.safetensors");
        let settings: String = trainer::checkpoint::load(&last)
            .unwrap()
            .meta("config")
            .unwrap();
        assert!(settings.contains(&recorded), "{settings}");

        let out = ok(trainer(&[
            "eval",
            "--checkpoint",
            s(&last),
            "--batch-size",
            "64",
        ]));
        let mut test = (*raw.test).clone();
        test.preprocess(preprocess);
        let (mut model, _) = state::load_model(&last).unwrap();
        let want = evaluate(&mut model, &std::sync::Arc::new(test), 64, false, |_| {}).unwrap();
        let row = trainer::metrics::read::<trainer::metrics::EpochRecord>(
            &run.join(trainer::metrics::METRICS_FILE),
        )
        .unwrap()
        .pop()
        .unwrap();
        assert_eq!(format!("{:.6}", want.loss), format!("{:.6}", row.test_loss));
        for line in [
            format!("preprocess:  {} (the checkpoint's)", preprocess.name()),
            format!("test loss:   {:.6}", want.loss),
            format!("top-1:       {:.2}%", 100.0 * want.top1),
        ] {
            assert!(out.contains(&line), "{line:?} missing from:\n{out}");
        }

        let out = ok(trainer(&[
            "predict",
            "--checkpoint",
            s(&last),
            "--top-k",
            "3",
            s(&noisy),
        ]));
        let img = read_image(&noisy).unwrap();
        let mut by_hand = |sharpen: bool| -> Vec<String> {
            let img: Image = if sharpen {
                cifar_data::preprocess::sharpen_image(&img)
            } else {
                img
            };
            let x = img.iter().map(|&v| cifar_data::normalize(v)).collect();
            top_lines(&mut model, x, 3)
        };
        let sharpened = preprocess == Preprocess::Sharpen;
        let printed: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(printed, by_hand(sharpened), "{out}");
        assert_ne!(
            by_hand(true),
            by_hand(false),
            "the test cannot tell a sharpened input from the image"
        );
    }
}

/// `preview` writes the first images of a split as training batch 0 of the epoch augments them
/// (after sharpening), as records `cifar_data` reads and as a PNG grid of the expected size; from
/// a directory, unsharpened and unaugmented, it gives the files' own images.
#[test]
fn preview_writes_what_training_sees_as_records_and_a_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("out/preview");
    let out = ok(trainer(&[
        "preview",
        "--synth-train",
        "40",
        "--synth-test",
        "20",
        "--count",
        "10",
        "--seed",
        "5",
        "--epoch",
        "2",
        "--out",
        s(&prefix),
    ]));
    assert!(
        out.contains("10 training images (sharpen, augment Seed"),
        "{out}"
    );
    let records = read_records(
        &tmp.path().join("out/preview.bin"),
        cifar_data::Format::Cifar100,
    )
    .unwrap();
    let mut data = trainer::data::synthetic(&SynthConfig {
        seed: 0,
        train: 40,
        test: 20,
    })
    .unwrap();
    data.preprocess(Preprocess::Sharpen);
    let sharpened = &data.train.images()[..10 * IMAGE_BYTES];
    let mut want = sharpened.to_vec();
    let indices: Vec<usize> = (0..10).collect();
    augment_batch(&mut want, &indices, Augment::Seed, 5, 2, 0).unwrap();
    assert!(
        records.images == want,
        "the images are not the library's augmentation"
    );
    assert!(records.images != sharpened, "nothing was augmented");
    let bytes = |l: &[u32]| l[..10].iter().map(|&v| v as u8).collect::<Vec<u8>>();
    assert_eq!(records.fine, bytes(data.train.fine()));
    assert_eq!(records.coarse, data.train.coarse().map(bytes));
    let png = image::open(tmp.path().join("out/preview.png")).unwrap();
    let size = trainer::commands::preview::PREVIEW_LAYOUT.size(10);
    assert_eq!((png.width(), png.height()), size);

    let dir = tmp.path().join("synth");
    ok(trainer(&[
        "synth",
        "--dir",
        s(&dir),
        "--train",
        "12",
        "--test",
        "9",
    ]));
    let plain = tmp.path().join("plain");
    ok(trainer(&[
        "preview",
        "--data",
        s(&dir),
        "--dataset",
        "synthetic",
        "--split",
        "test",
        "--augment",
        "none",
        "--sharpen",
        "off",
        "--count",
        "9",
        "--out",
        s(&plain),
    ]));
    let records =
        read_records(&tmp.path().join("plain.bin"), cifar_data::Format::Cifar100).unwrap();
    let files = cifar_data::Dataset::load(&dir, cifar_data::Format::Cifar100).unwrap();
    assert!(
        records.images == files.test.images(),
        "not the files' images"
    );

    refused(
        trainer(&[
            "preview",
            "--synth-train",
            "40",
            "--count",
            "41",
            "--out",
            s(&plain),
        ]),
        &["--count 41 is more than the 40 images of the training split"],
    );
}

#[test]
fn bench_prints_throughput_and_memory() {
    let out = ok(trainer(&[
        "bench",
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "2",
        "--device",
        "cpu",
    ]));
    assert!(out.contains("234790 parameters"), "{out}");
    for needle in [
        "training: 2 steps",
        "inference: 2 batches",
        "images/s",
        "GFLOP/s",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    if cfg!(target_os = "linux") {
        assert!(out.contains("peak memory (VmHWM): "), "{out}");
    }
    // The binary's caching allocator: a warm step takes large buffers from its cache, and the
    // cache never holds more than the largest live set (plus the block being allocated).
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("memory per step: "))
        .unwrap_or_else(|| panic!("no memory line in:\n{out}"));
    // The number `back` words before the word `after`.
    let number = |after: &str, back: usize| -> f64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| *w == after).unwrap();
        words[i - back].parse().unwrap()
    };
    let (reused, live, held) = (number("reused,", 1), number("live", 2), number("held", 2));
    assert!(reused >= 10.0 && held <= live + 2.0, "{line}");
}

/// `--precision bf16` on the CPU: a bench runs where the CPU has AVX-512 BF16, says which kernels
/// and that its FLOP rate is measured against FP32's peak, and refuses `--conv-algo`; with the
/// kernels held to AVX2 (or on a CPU without it) the mode is refused before any work, naming
/// what is missing.
#[test]
fn bench_in_bf16_on_the_cpu_runs_where_it_can_and_is_refused_elsewhere() {
    let args = [
        "bench",
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--precision",
        "bf16",
    ];
    if kernels::conv2d::bf16_available() {
        let out = ok(trainer(&args));
        assert!(out.contains("precision bf16"), "{out}");
        assert!(out.contains("conv: the BF16 sliding kernels"), "{out}");
        assert!(out.contains("of the FP32 FMA peak"), "{out}");
        // --conv-algo pins FP32 algorithms, which bf16 does not run: refused, not ignored.
        let pinned = [&args[..], &["--conv-algo", "winograd4"]].concat();
        refused(
            trainer(&pinned),
            &["--conv-algo pins the CPU's FP32 convolution algorithms"],
        );
    }
    let narrow = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .env("KERNELS_CONV_CALIBRATE", "0")
        .env("KERNELS_ISA", "avx2")
        .args(args)
        .output()
        .unwrap();
    refused(
        narrow,
        &[
            "--precision bf16 on --device cpu: bf16 on the CPU needs AVX-512 BF16",
            "use --precision fp32",
        ],
    );
}

#[test]
fn bench_profiles_steps_of_its_own() {
    let out = ok(trainer(&[
        "bench",
        "--preset",
        "tiny",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--profile",
    ]));
    let training = out
        .find("training: 1 steps")
        .unwrap_or_else(|| panic!("{out}"));
    let profile = out
        .find("profile: milliseconds per step (1 more steps)\n")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        training < profile,
        "the profile follows the timed steps:\n{out}"
    );
    for row in ["conv ", "optimizer ", "other ", "step "] {
        assert!(
            out.contains(&format!("\n{row}")),
            "{row:?} missing from:\n{out}"
        );
    }
    assert!(out.contains("inference: 1 batches"), "{out}");
}

#[test]
fn bench_pins_the_convolution_algorithm() {
    for algo in ["direct", "winograd2", "winograd4"] {
        let out = ok(trainer(&[
            "bench",
            "--preset",
            "tiny",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--conv-algo",
            algo,
        ]));
        assert!(out.contains(&format!("threads, conv {algo}\n")), "{out}");
        assert!(out.contains("training: 1 steps"), "{out}");
    }
}

/// On the CPU the convolutions are calibrated unless `--conv-calibration off` says otherwise:
/// the choices land in the cache file of `KERNELS_CACHE_DIR`, one line per layer shape and
/// pass; with calibration off no file is written and bench names the fixed rule.
#[test]
fn convolutions_are_calibrated_by_default_and_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = |calibration: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .env_remove("KERNELS_CONV_CALIBRATE")
            .env("KERNELS_CACHE_DIR", tmp.path())
            .args([
                "bench",
                "--preset",
                "tiny",
                "--batch-size",
                "2",
                "--steps",
                "1",
            ])
            .args(["--device", "cpu", "--conv-calibration", calibration])
            .output()
            .expect("the trainer binary runs");
        ok(o)
    };
    let out = bench("off");
    assert!(out.contains("conv: the fixed rule"), "{out}");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "{out}");
    let out = bench("on");
    assert!(
        out.contains("conv: calibrated on this machine, cache"),
        "{out}"
    );
    let files: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "{out}");
    let cache = fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    // tiny: 8 convolution shapes, 3 passes each.
    assert_eq!(cache.lines().count(), 8 * 3, "{cache}");
    assert!(cache.lines().all(|l| l.starts_with("2 ")), "{cache}");
}

#[test]
fn a_missing_checkpoint_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.safetensors");
    refused(
        trainer(&["eval", "--checkpoint", s(&missing)]),
        &["--checkpoint", s(&missing)],
    );
}

#[test]
fn a_file_that_is_not_an_image_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(tmp.path(), &config(TINY), 100, None);
    let text = tmp.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    refused(
        trainer(&["predict", "--checkpoint", s(&ckpt), s(&text)]),
        &[s(&text), "not a readable PNG or JPEG"],
    );
    let missing = tmp.path().join("missing.jpg");
    refused(
        trainer(&["predict", "--checkpoint", s(&ckpt), s(&missing)]),
        &[s(&missing)],
    );
}

#[test]
fn a_checkpoint_of_another_shape_is_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    // Saved settings say tiny (8/16/32/64), the tensors are 4/4/8/8.
    let ckpt = checkpoint(tmp.path(), &config(TINY), 100, Some([4, 4, 8, 8]));
    refused(
        trainer(&["eval", "--checkpoint", s(&ckpt)]),
        &[
            "does not match the model",
            "blocks.0.conv_block1.conv1.weight",
        ],
    );
}

#[test]
fn a_dataset_with_another_class_count_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Ten classes, evaluated on the synthetic set's hundred.
    let ckpt = checkpoint(tmp.path(), &config(TINY), 10, None);
    refused(
        trainer(&["eval", "--checkpoint", s(&ckpt)]),
        &["trained on 10 classes", "has 100"],
    );
}

#[test]
fn cuda_without_a_gpu_is_refused() {
    // This machine has no GPU: `cuda` must say so (and never panic); `auto` falls back.
    if kernels::cuda::gpu::Gpu::shared(0).is_ok() {
        eprintln!("skipped: a GPU is present");
        return;
    }
    refused(
        trainer(&[
            "bench", "--preset", "tiny", "--device", "cuda", "--steps", "1",
        ]),
        &["--device cuda:0: no usable CUDA GPU 0", "use --device cpu"],
    );
}

/// A tar.gz laid out as the CIFAR-100 release (`cifar-100-binary/` and its four files), holding
/// a small synthetic dataset of seed `seed`.
fn fake_release(seed: u64) -> Vec<u8> {
    use flate2::{write::GzEncoder, Compression};
    let src = tempfile::tempdir().unwrap();
    let cfg = cifar_data::synth::SynthConfig {
        seed,
        train: 20,
        test: 10,
    };
    cifar_data::synth::write(src.path(), &cfg).unwrap();
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    tar.append_dir("cifar-100-binary", src.path()).unwrap();
    for file in cifar_data::Format::Cifar100.all_files() {
        let name = format!("cifar-100-binary/{file}");
        tar.append_path_with_name(src.path().join(file), name)
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// `trainer download --archive` checks the file against the release's published MD5, which an
/// archive made here cannot have: the binary refuses it, naming the file and both checksums,
/// and unpacks nothing; a missing file is named too.
#[test]
fn download_refuses_an_archive_that_is_not_the_release() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cifar-100-binary.tar.gz");
    std::fs::write(&file, fake_release(1)).unwrap();
    let data = tmp.path().join("data");
    let args = ["download", "--dir", s(&data), "--archive", s(&file)];
    refused(
        trainer(&args),
        &[
            "--archive",
            s(&file),
            cifar_data::Format::Cifar100.md5(),
            "nothing was unpacked",
        ],
    );
    assert!(!cifar_data::Dataset::is_complete(
        &data,
        cifar_data::Format::Cifar100
    ));
    let missing = tmp.path().join("nowhere.tar.gz");
    let args = ["download", "--dir", s(&data), "--archive", s(&missing)];
    refused(trainer(&args), &[s(&missing)]);
}

/// The same command with the archive's own MD5 in place of the release's (the one thing the
/// test cannot give the binary) installs it, and a second archive replaces the first.
#[test]
fn download_installs_an_archive_with_the_expected_md5() {
    use md5::{Digest, Md5};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for seed in [1, 2] {
        let bytes = fake_release(seed);
        let file = tmp.path().join("cifar-100-binary.tar.gz");
        std::fs::write(&file, &bytes).unwrap();
        let md5: String = Md5::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let line = format!("trainer download --dir {} --archive {}", s(&data), s(&file));
        let Sub::Download(args) = Cli::try_parse_from(line.split_whitespace())
            .unwrap()
            .command
        else {
            unreachable!("a download command")
        };
        let dir = trainer::commands::download::install(&args, &file, &md5).unwrap();
        assert_eq!(dir, data.join("cifar-100-binary"));
        let loaded = cifar_data::Dataset::load(&data, cifar_data::Format::Cifar100).unwrap();
        let want = tmp.path().join(format!("want{seed}"));
        let cfg = cifar_data::synth::SynthConfig {
            seed,
            train: 20,
            test: 10,
        };
        cifar_data::synth::write(&want, &cfg).unwrap();
        let want = cifar_data::Dataset::load(&want, cifar_data::Format::Cifar100).unwrap();
        assert_eq!(loaded.train.images(), want.train.images(), "seed {seed}");
    }
}
