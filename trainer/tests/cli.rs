//! The command line: the seed's defaults, each refusal, and `config.toml` round trips.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use tensor_core::Device;
use trainer::cli::{Cli, Command, RealDataset, TrainArgs};
use trainer::config::{
    AugmentKind, DatasetKind, DeviceArg, OrderKind, PreprocessKind, Preset, TrainConfig,
};
use trainer::optim::{OptimizerKind, UpdateRule};
use trainer::precise_bn::PreciseBnWhen;
use trainer::schedule::ScheduleKind;

fn parse(args: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("trainer").chain(args.split_whitespace()))
}

fn train_args(args: &str) -> TrainArgs {
    match parse(&format!("train {args}")).unwrap().command {
        Command::Train(a) => a,
        other => panic!("parsed as {other:?}"),
    }
}

fn train_config(args: &str) -> TrainConfig {
    train_args(args).config().unwrap()
}

#[test]
fn the_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn train_defaults_are_the_seeds_recipe() {
    let c = train_config("");
    assert_eq!(c.run.batch_size, 250);
    assert_eq!(c.run.eval_batch_size, 250);
    assert_eq!(c.run.epochs, 75);
    assert_eq!(c.run.patience, 10);
    assert_eq!(c.run.log_every, 25);
    assert!(
        c.run.eval_train,
        "the seed evaluated the whole training set every epoch"
    );
    assert_eq!(
        (c.run.precise_bn, c.run.precise_bn_when),
        (50, PreciseBnWhen::Unconverged)
    );
    assert_eq!(c.run.max_steps, None);
    assert_eq!(c.run.threads, None);
    assert_eq!(c.run.device, DeviceArg::Auto);
    assert_eq!(c.optimizer.lr, 5e-4);
    assert_eq!(c.optimizer.lr_decay, 0.98);
    assert_eq!(c.optimizer.schedule, ScheduleKind::Seed);
    assert_eq!(c.optimizer.warmup_epochs, 0);
    assert_eq!(c.optimizer.clip_norm, 100.0);
    assert_eq!(
        c.optimizer.rule,
        UpdateRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8
        }
    );
    let r = &c.regularization;
    assert_eq!(r.dropout_keep, 0.5);
    assert_eq!(r.dropblock_size, 5);
    assert_eq!(
        (
            r.dropblock_keep_start,
            r.dropblock_keep_end,
            r.dropblock_keep_step
        ),
        (1.0, 0.8, 0.005)
    );
    assert_eq!((r.bn_momentum, r.bn_epsilon), (0.997, 1e-5));
    assert_eq!(c.data.augment, AugmentKind::Seed);
    assert_eq!(c.data.preprocess, PreprocessKind::Sharpen);
    assert_eq!(c.data.order, OrderKind::Fixed);
    assert_eq!(c.data.dataset, DatasetKind::Synthetic);
    assert_eq!(c.data.dir, None);
    assert_eq!(c.model.preset, Preset::Seed);
    assert_eq!(c.model.widths, [128, 256, 512, 1024]);
    assert_eq!(c.model.hidden, 4096);

    let a = train_args("").run;
    assert_eq!(a.out, PathBuf::from("runs/latest"));
    assert_eq!((a.resume, a.init), (None, None));
}

#[test]
fn train_flags_reach_the_config() {
    let c = train_config(
        "--data /d --preset small --widths 16,32,64,128 --optimizer sgd --nesterov --schedule cosine \
         --warmup-epochs 5 --augment standard --device cuda:1 --threads 2 --seed 7 --max-steps 300 \
         --eval-train --log-every 10 --epochs 30 --lr 0.1",
    );
    assert_eq!(
        c.data.dataset,
        DatasetKind::Cifar100,
        "--data alone means CIFAR-100"
    );
    assert_eq!(c.data.dir.as_deref(), Some(Path::new("/d")));
    assert_eq!(c.model.preset, Preset::Small);
    assert_eq!(c.model.widths, [16, 32, 64, 128]);
    assert_eq!(c.model.hidden, 512, "the preset's hidden size is kept");
    assert_eq!(
        c.optimizer.rule,
        UpdateRule::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4
        }
    );
    assert_eq!(c.optimizer.rule.kind(), OptimizerKind::Sgd);
    assert_eq!(c.optimizer.schedule, ScheduleKind::Cosine);
    assert_eq!(c.optimizer.warmup_epochs, 5);
    assert_eq!(c.data.augment, AugmentKind::Standard);
    assert_eq!(c.run.device, DeviceArg::Fixed(Device::Cuda(1)));
    assert_eq!(
        (c.run.threads, c.run.seed, c.run.max_steps),
        (Some(2), 7, Some(300))
    );
    assert!(c.run.eval_train);
    assert_eq!(c.run.log_every, 10);
    assert_eq!(train_config("--preset tiny --hidden 32").model.hidden, 32);
    assert_eq!(
        train_config("--data d --dataset synthetic").data.dataset,
        DatasetKind::Synthetic
    );
    assert_eq!(
        train_config("--dataset cifar10").data.dataset,
        DatasetKind::Cifar10
    );
    let a = train_args("--resume runs/a/last.safetensors").run;
    assert_eq!(a.resume, Some(PathBuf::from("runs/a/last.safetensors")));

    let c = train_config(
        "--sharpen off --order shuffle --eval-train off --precise-bn 8 --precise-bn-when always",
    );
    assert_eq!(
        (c.data.preprocess, c.data.order, c.run.eval_train),
        (PreprocessKind::None, OrderKind::Shuffle, false)
    );
    assert_eq!(
        (c.run.precise_bn, c.run.precise_bn_when),
        (8, PreciseBnWhen::Always)
    );
    assert!(train_config("--eval-train on").run.eval_train);
    assert!(
        train_config("--eval-train --epochs 3").run.eval_train,
        "--eval-train alone still means on"
    );
}

#[test]
fn devices_parse_and_resolve() {
    for (text, want) in [
        ("auto", DeviceArg::Auto),
        ("cpu", DeviceArg::Fixed(Device::Cpu)),
        ("cuda", DeviceArg::Fixed(Device::Cuda(0))),
        ("cuda:3", DeviceArg::Fixed(Device::Cuda(3))),
    ] {
        assert_eq!(
            train_args(&format!("--device {text}")).runtime.device,
            want,
            "{text}"
        );
    }
    assert_eq!(DeviceArg::Auto.resolve(false), Device::Cpu);
    assert_eq!(DeviceArg::Auto.resolve(true), Device::Cuda(0));
    assert_eq!(DeviceArg::Fixed(Device::Cpu).resolve(true), Device::Cpu);
    assert_eq!(DeviceArg::Fixed(Device::Cuda(2)).to_string(), "cuda:2");
}

/// Each bad `train` value, and a piece of the message that must name it.
const TRAIN_REFUSALS: &[(&str, &str)] = &[
    ("--lr -0.1", "--lr must be a finite number > 0 (1.2e-38 to 3.4e38, an f32's range), got -0.1"),
    ("--lr 0", "--lr must be a finite number > 0"),
    ("--lr nan", "--lr must be a finite number > 0 (1.2e-38 to 3.4e38, an f32's range), got NaN"),
    ("--lr-decay 1.5", "--lr-decay must be in (0, 1]"),
    ("--lr-decay 0", "--lr-decay must be in (0, 1]"),
    ("--batch-size 0", "--batch-size must be at least 1"),
    (
        "--eval-batch-size 0",
        "--eval-batch-size must be at least 1",
    ),
    ("--epochs 0", "--epochs must be at least 1"),
    ("--clip-norm 0", "--clip-norm must be > 0"),
    ("--clip-norm -5", "--clip-norm must be > 0"),
    ("--clip-norm 1e-50", "--clip-norm must be > 0"),
    ("--clip-norm nan", "--clip-norm must be > 0"),
    ("--lr 1e39", "--lr must be a finite number > 0"),
    (
        "--dropout-keep 0",
        "--dropout-keep must be a probability in (0, 1] (at least 1.2e-38, an f32's smallest normal), got 0",
    ),
    (
        "--dropout-keep 1.5",
        "--dropout-keep must be a probability in (0, 1] (at least 1.2e-38, an f32's smallest normal), got 1.5",
    ),
    (
        "--dropblock-keep-start 1.2",
        "--dropblock-keep-start must be a probability in (0, 1]",
    ),
    (
        "--dropblock-keep-end 0",
        "--dropblock-keep-end must be a probability in (0, 1]",
    ),
    (
        "--dropblock-keep-end 1e-50",
        "--dropblock-keep-end must be a probability in (0, 1]",
    ),
    (
        "--dropout-keep 1e-40",
        "--dropout-keep must be a probability in (0, 1]",
    ),
    (
        "--dropblock-keep-start 0.8 --dropblock-keep-end 0.9",
        "--dropblock-keep-end must not exceed",
    ),
    (
        "--dropblock-keep-step -0.1",
        "--dropblock-keep-step must be a finite number >= 0",
    ),
    ("--dropblock-size 0", "--dropblock-size must be at least 1"),
    ("--bn-momentum 1", "--bn-momentum must be in [0, 1)"),
    ("--bn-momentum 0.999999999", "--bn-momentum must be in [0, 1)"),
    ("--bn-epsilon 0", "--bn-epsilon must be a finite number > 0"),
    ("--bn-epsilon 1e-50", "--bn-epsilon must be a finite number > 0"),
    (
        "--widths 8,16,32",
        "--widths needs exactly 4 values, got [8, 16, 32]",
    ),
    ("--widths 8,0,32,64", "--widths must all be at least 1"),
    ("--hidden 0", "--hidden must be at least 1"),
    (
        "--warmup-epochs 75",
        "--warmup-epochs must be fewer than --epochs",
    ),
    ("--log-every 0", "--log-every must be at least 1"),
    ("--max-steps 0", "--max-steps must be at least 1"),
    ("--threads 0", "--threads must be at least 1"),
    ("--synth-train 0", "--synth-train must be at least 1"),
    (
        "--momentum 0.5",
        "--momentum applies to --optimizer sgd only",
    ),
    ("--nesterov", "--nesterov applies to --optimizer sgd only"),
    (
        "--weight-decay 1e-4",
        "--weight-decay applies to --optimizer sgd only",
    ),
    (
        "--optimizer sgd --adam-beta1 0.8",
        "--adam-beta1 applies to --optimizer adam only",
    ),
    ("--adam-beta2 1.0", "--adam-beta2 must be in [0, 1)"),
    (
        "--adam-epsilon 0",
        "--adam-epsilon must be a finite number > 0",
    ),
    (
        "--optimizer sgd --momentum 1.0",
        "--momentum must be in [0, 1)",
    ),
    (
        "--optimizer sgd --weight-decay -1",
        "--weight-decay must be a finite number >= 0",
    ),
    (
        "--optimizer sgd --nesterov --momentum 0",
        "--nesterov needs --momentum > 0",
    ),
];

#[test]
fn bad_train_values_are_refused_naming_the_flag() {
    for (args, want) in TRAIN_REFUSALS {
        let cli =
            parse(&format!("train {args}")).unwrap_or_else(|e| panic!("{args}: clap refused: {e}"));
        let err = cli.validate().expect_err(args).to_string();
        assert!(err.contains(want), "{args}: message {err:?} lacks {want:?}");
    }
}

#[test]
fn unknown_choices_and_conflicts_are_refused_by_the_parser() {
    for (args, want) in [
        ("train --preset huge", "huge"),
        ("train --optimizer rmsprop", "rmsprop"),
        ("train --schedule linear", "linear"),
        ("train --augment heavy", "heavy"),
        ("train --sharpen maybe", "maybe"),
        ("train --order random", "random"),
        ("train --eval-train yes", "yes"),
        ("train --precise-bn-when sometimes", "sometimes"),
        ("preview --out p --split valid", "valid"),
        ("preview", "--out"),
        ("train --dataset imagenet", "imagenet"),
        ("train --device tpu", "unknown device \"tpu\""),
        ("train --device cuda:x", "invalid CUDA ordinal"),
        ("train --batch-size -5", "-5"),
        ("train --batch-size ten", "ten"),
        ("train --resume a --init b", "--init"),
        ("train --no-such-flag", "--no-such-flag"),
        ("predict --checkpoint c", "IMAGE"),
        ("eval", "--checkpoint"),
        ("synth", "--dir"),
        ("download --dataset synthetic", "synthetic"),
    ] {
        let err = parse(args).expect_err(args).to_string();
        assert!(err.contains(want), "{args}: message {err:?} lacks {want:?}");
    }
}

/// Longer than a screen: one block per subcommand, each a parse and its checks, read in order.
#[test]
fn other_subcommands_parse_with_defaults_and_refuse_bad_values() {
    let Command::Download(d) = parse("download").unwrap().command else {
        panic!()
    };
    assert_eq!(
        (d.dataset, d.dir),
        (RealDataset::Cifar100, PathBuf::from("data"))
    );
    assert_eq!(
        cifar_data::Format::from(RealDataset::Cifar10),
        cifar_data::Format::Cifar10
    );

    let Command::Synth(s) = parse("synth --dir out").unwrap().command else {
        panic!()
    };
    assert_eq!((s.train, s.test, s.seed), (10_000, 2_000, 0));

    let Command::Bench(b) = parse("bench --preset seed --batch-size 64 --device cpu")
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(
        (b.batch_size, b.steps, b.model.preset),
        (64, 10, Preset::Seed)
    );
    assert_eq!(b.runtime.device, DeviceArg::Fixed(Device::Cpu));

    let cli = parse("predict --checkpoint c.safetensors a.png b.jpg").unwrap();
    cli.validate().unwrap();
    let Command::Predict(p) = cli.command else {
        panic!()
    };
    assert_eq!(p.images, [PathBuf::from("a.png"), PathBuf::from("b.jpg")]);
    assert_eq!(p.top_k, 5);

    let cli = parse("eval --checkpoint c --predictions p.csv --data d").unwrap();
    cli.validate().unwrap();
    let Command::Eval(e) = cli.command else {
        panic!()
    };
    assert_eq!(
        (e.batch_size, e.predictions),
        (250, Some(PathBuf::from("p.csv")))
    );
    assert_eq!(e.data.dataset(), DatasetKind::Cifar100);

    for (args, want) in [
        (
            "eval --checkpoint c --batch-size 0",
            "--batch-size must be at least 1",
        ),
        (
            "eval --checkpoint c --threads 0",
            "--threads must be at least 1",
        ),
        (
            "predict --checkpoint c --top-k 0 a.png",
            "--top-k must be at least 1",
        ),
        ("synth --dir d --train 0", "--train must be at least 1"),
        ("synth --dir d --test 0", "--test must be at least 1"),
        ("bench --steps 0", "--steps must be at least 1"),
        ("bench --batch-size 0", "--batch-size must be at least 1"),
        ("bench --widths 1,2", "--widths needs exactly 4 values"),
        ("preview --out p --count 0", "--count must be at least 1"),
        (
            "preview --out p --synth-train 0",
            "--synth-train must be at least 1",
        ),
    ] {
        let err = parse(args).unwrap().validate().expect_err(args).to_string();
        assert!(err.contains(want), "{args}: message {err:?} lacks {want:?}");
    }
}

#[test]
fn config_round_trips_through_toml() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        "",
        "--optimizer sgd --momentum 0.8 --nesterov --weight-decay 1e-4 --device cuda:2 --threads 3",
        "--data /data --dataset cifar10 --max-steps 5 --preset tiny --lr 0.0123456789",
        "--sharpen off --order shuffle --eval-train off --precise-bn 0 --precise-bn-when always",
    ] {
        let c = train_config(args);
        let path = dir.path().join("config.toml");
        c.save(&path).unwrap();
        assert_eq!(TrainConfig::load(&path).unwrap(), c, "{args}");
    }
    let text = train_config("").to_toml().unwrap();
    for table in [
        "[data]",
        "[model]",
        "[optimizer]",
        "[optimizer.rule]",
        "[regularization]",
        "[run]",
    ] {
        assert!(text.contains(table), "{table} missing from:\n{text}");
    }
    assert!(
        text.contains("kind = \"adam\"") && text.contains("device = \"auto\""),
        "{text}"
    );
    // The preprocessing as cifar_data names it, the order and precise batch norm in words.
    for line in [
        "preprocess = \"sharpen\"",
        "order = \"fixed\"",
        "precise_bn = 50",
        "precise_bn_when = \"unconverged\"",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert_eq!(
        cifar_data::Preprocess::from_name("sharpen"),
        Some(cifar_data::Preprocess::from(PreprocessKind::Sharpen))
    );
}

/// A config.toml written before sharpening, the order and precise batch norm were settings still
/// loads: it did not sharpen, walked the fixed order, and takes today's precise batch norm.
#[test]
fn configs_from_before_the_recipe_settings_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let new = train_config("--order shuffle --precise-bn 3")
        .to_toml()
        .unwrap();
    let old: String = new
        .lines()
        .filter(|l| {
            !["preprocess", "order", "precise_bn"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old, new);
    std::fs::write(&path, old).unwrap();
    let c = TrainConfig::load(&path).unwrap();
    assert_eq!(
        (c.data.preprocess, c.data.order),
        (PreprocessKind::None, OrderKind::Fixed)
    );
    assert_eq!(
        (c.run.precise_bn, c.run.precise_bn_when),
        (50, PreciseBnWhen::Unconverged)
    );
}

#[test]
fn bad_config_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let good = train_config("").to_toml().unwrap();

    std::fs::write(&path, good.replace("batch_size = 250", "batch_size = 0")).unwrap();
    let err = TrainConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("config.toml") && err.contains("--batch-size must be at least 1"),
        "{err}"
    );

    std::fs::write(&path, good.replace("[run]", "[run]\nfrobnicate = 1")).unwrap();
    let err = TrainConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("config.toml") && err.contains("frobnicate"),
        "{err}"
    );

    std::fs::write(
        &path,
        good.replace("preset = \"seed\"", "preset = \"huge\""),
    )
    .unwrap();
    let err = TrainConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("huge"), "{err}");

    let err = TrainConfig::load(&dir.path().join("absent.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn checkpoint_every_takes_a_time_a_number_of_steps_or_off() {
    use std::time::Duration;
    use trainer::config::CheckpointEvery::{self, Off, Steps, Time};
    let secs = |s| Time(Duration::from_secs(s));
    assert_eq!(train_config("").run.checkpoint_every, secs(600));
    for (arg, want, shown) in [
        ("10m", secs(600), "10m"),
        ("90s", secs(90), "90s"),
        ("120s", secs(120), "2m"),
        ("2h", secs(7200), "2h"),
        ("500steps", Steps(500), "500steps"),
        ("500", Steps(500), "500steps"),
        ("off", Off, "off"),
    ] {
        let every = train_config(&format!("--checkpoint-every {arg}"))
            .run
            .checkpoint_every;
        assert_eq!((every, every.to_string().as_str()), (want, shown), "{arg}");
        assert_eq!(shown.parse::<CheckpointEvery>().unwrap(), want);
    }
    for (arg, want) in [
        (
            "10x",
            "expected a time (90s, 10m, 2h), a number of steps (500steps or 500) or off",
        ),
        ("1.5h", "expected a time"),
        ("m", "expected a time"),
        (
            "0",
            "must be at least 1 (off writes checkpoints only at epoch ends)",
        ),
        ("0m", "must be at least 1"),
        ("99999999999999999h", "too long"),
    ] {
        let err = parse(&format!("train --checkpoint-every {arg}"))
            .expect_err(arg)
            .to_string();
        assert!(
            err.contains("--checkpoint-every") && err.contains(want),
            "{arg}: {err}"
        );
    }
    // Steps count over the run; a time since the last checkpoint.
    assert!(Steps(3).due(6, Duration::ZERO) && !Steps(3).due(7, Duration::from_secs(1 << 20)));
    assert!(!secs(10).due(1, Duration::from_secs(9)) && secs(10).due(1, Duration::from_secs(10)));
    assert!(!Off.due(1000, Duration::MAX));
}

#[test]
fn download_takes_a_local_archive() {
    let Command::Download(d) = parse("download --archive x.tar.gz").unwrap().command else {
        panic!("a download command")
    };
    assert_eq!(d.archive, Some(PathBuf::from("x.tar.gz")));
}

/// `--precision` on train, eval, bench and predict: fp32 by default, recorded in config.toml (a
/// config written before the setting loads as fp32), a bad mode refused by the parser, and a
/// tensor-core mode refused on the CPU, before any data is read, naming the mode and the device.
#[test]
fn precision_reaches_the_config_and_is_checked_against_the_device() {
    use trainer::config::PrecisionKind;

    assert_eq!(train_config("").run.precision, PrecisionKind::Fp32);
    let c = train_config("--precision bf16 --device cuda");
    assert_eq!(c.run.precision, PrecisionKind::Bf16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    c.save(&path).unwrap();
    assert_eq!(TrainConfig::load(&path).unwrap(), c);
    let text = c.to_toml().unwrap();
    assert!(text.contains("precision = \"bf16\""), "{text}");
    let old: String = text
        .lines()
        .filter(|l| !l.starts_with("precision ="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old, text);
    std::fs::write(&path, old).unwrap();
    assert_eq!(
        TrainConfig::load(&path).unwrap().run.precision,
        PrecisionKind::Fp32
    );

    for args in [
        "eval --checkpoint c.safetensors --precision tf32",
        "bench --precision bf16",
        "predict --checkpoint c.safetensors x.png --precision fp32",
    ] {
        parse(args).unwrap_or_else(|e| panic!("{args}: {e}"));
    }
    let e = parse("train --precision fp16").unwrap_err().to_string();
    assert!(e.contains("fp16") && e.contains("tf32"), "{e}");

    let e = PrecisionKind::Tf32.check_device(Device::Cpu).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid setting: --precision tf32 on --device cpu: the CPU has no TF32 arithmetic (it \
         runs fp32, and bf16 where it has AVX-512 BF16); use --device cuda or --precision fp32"
    );
    PrecisionKind::Fp32.check_device(Device::Cpu).unwrap();
    PrecisionKind::Bf16.check_device(Device::CudaEmu).unwrap();
    // bf16 on the CPU: accepted where it has AVX-512 BF16 (the run then fails on its data),
    // refused naming what is missing elsewhere.
    let args = train_args("--device cpu --precision bf16 --data /nonexistent --preset tiny");
    let e = format!("{:#}", trainer::commands::train::run(&args).unwrap_err());
    if kernels::conv2d::bf16_available() {
        PrecisionKind::Bf16.check_device(Device::Cpu).unwrap();
        assert!(e.contains("/nonexistent"), "{e}");
    } else {
        assert!(
            e.contains("--precision bf16 on --device cpu: bf16 on the CPU needs AVX-512 BF16"),
            "{e}"
        );
    }
}
