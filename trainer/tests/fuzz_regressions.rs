//! Every input the fuzzers ever found a crash or hang with (`tests/fuzz/<target>/`), and the
//! committed seed corpora (`fuzz/seeds/<target>/`), fed on stable through the same harness the
//! cargo-fuzz targets run (`trainer::fuzz_harness`). See `fuzz/README.md`.
//!
//! The trainer's seeds are real files of this crate (a checkpoint of a network of width 1, the
//! default `config.toml`, small PNG and JPEG images) plus hand-made hostile ones; the ignored
//! test `write_seed_corpora` writes them (`cargo test -p trainer --test fuzz_regressions --
//! --ignored`). The same contents each time, though not the same bytes: a checkpoint's metadata
//! is written in the order of a `HashMap`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use trainer::checkpoint::{self, Checkpoint};
use trainer::cli::{Cli, Command};
use trainer::commands::predict::read_image;
use trainer::config::TrainConfig;
use trainer::fuzz_harness;
use trainer::model::ResNet;
use trainer::optim::Optimizer;
use trainer::state::{self, RunState};

/// A fuzz target's body: panics on a finding.
type Harness = fn(&[u8]);

/// Each cargo-fuzz target by name, with the harness its `fuzz_target!` calls. `scripts/fuzz.sh`
/// reads the names here to know where a target's findings go.
const TARGETS: [(&str, Harness); 4] = [
    ("checkpoint", fuzz_harness::checkpoint),
    ("checkpoint_header", fuzz_harness::checkpoint_header),
    ("config_toml", fuzz_harness::config_toml),
    ("predict_image", fuzz_harness::predict_image),
];

/// A hang is an input that takes this long; the fuzzers run with `-timeout=10`.
const HANG: Duration = Duration::from_secs(10);

/// The files directly in `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => return vec![],
    };
    files.retain(|p| p.is_file());
    files.sort();
    files
}

fn run_all(base: &Path) -> usize {
    let mut count = 0;
    for (target, harness) in TARGETS {
        for path in inputs(&base.join(target)) {
            let data = fs::read(&path).unwrap();
            let start = Instant::now();
            harness(&data);
            assert!(start.elapsed() < HANG, "{} hangs", path.display());
            count += 1;
        }
    }
    count
}

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn saved_fuzz_findings_no_longer_fail() {
    run_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz"));
}

#[test]
fn seed_corpora_pass_the_harness() {
    for (target, _) in TARGETS {
        assert!(
            !inputs(&seeds().join(target)).is_empty(),
            "no seeds for {target}"
        );
    }
    run_all(&seeds());
}

/// A seed file copied to `dir` under `name`, for the loaders that take a path.
fn seed_as(dir: &Path, target: &str, seed: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(seeds().join(target).join(seed), &path).unwrap();
    path
}

/// Hostile headers are refused by their checks, before anything of the size they claim is
/// allocated (an attempt would abort this test process: 4 TB, or 30 GB, more than the machine
/// has), with a message naming the file.
#[test]
fn files_that_claim_huge_sizes_are_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("tensor_1e12_values", "file not fully covered"),
        ("header_length_2e40", "header too large"),
        (
            "network_too_big_for_its_file",
            "the model expects [100000, 1, 3, 3]",
        ),
    ];
    for (seed, want) in cases {
        let path = seed_as(dir.path(), "checkpoint", seed, "x.safetensors");
        let err = state::load_model(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.safetensors") && err.contains(want),
            "{seed}: {err}"
        );
    }
    let path = seed_as(dir.path(), "predict_image", "png_100000x100000", "big.png");
    let err = format!("{:#}", read_image(&path).unwrap_err());
    assert!(err.contains("big.png") && err.contains("limit"), "{err}");
}

// ---- The seed corpora: `cargo test -p trainer --test fuzz_regressions -- --ignored` ----

/// Writes `fuzz/seeds/{checkpoint,checkpoint_header,config_toml,predict_image}/`.
#[test]
#[ignore = "writes the committed seed corpora; run by hand to change them"]
fn write_seed_corpora() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in checkpoint_seeds(dir.path()) {
        write_seed("checkpoint", name, &bytes);
        if let Some(split) = header_and_tensors(&bytes) {
            write_seed("checkpoint_header", name, &split);
        }
    }
    for (name, text) in config_seeds() {
        write_seed("config_toml", name, text.as_bytes());
    }
    for (name, bytes) in image_seeds() {
        write_seed("predict_image", name, &bytes);
    }
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = seeds().join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

/// The train settings of `flags`.
fn config(flags: &str) -> TrainConfig {
    let args = format!("trainer train {flags}");
    match Cli::try_parse_from(args.split_whitespace())
        .unwrap()
        .command
    {
        Command::Train(a) => a.config().unwrap(),
        _ => unreachable!("a train command"),
    }
}

/// A checkpoint of the network of width 1 (2 classes) of `flags`, mid-epoch, as bytes.
fn micro_checkpoint(dir: &Path, flags: &str, with_optimizer: bool) -> Vec<u8> {
    let cfg = config(&format!("--widths 1,1,1,1 --hidden 1 {flags}"));
    let spec = state::net_spec(&cfg, 2, 0);
    let mut model = ResNet::new(&spec, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let mut opt = Optimizer::new(cfg.optimizer.rule, &mut model);
    let st = RunState {
        step: 7,
        epoch: 1,
        batch_in_epoch: 3,
        test_losses: vec![2.5],
        epoch_loss_sum: 2.25,
        epoch_correct: 5,
        epoch_seen: 12,
    };
    let names = ["cat".to_string(), "dog".to_string()];
    let path = dir.join("micro.safetensors");
    let opt = with_optimizer.then_some(&mut opt);
    state::save(&path, &mut model, opt, &cfg, &names, &st).unwrap();
    fs::read(&path).unwrap()
}

/// A safetensors file of the raw `header` JSON and `tensors` bytes.
fn safetensors_file(header: &str, tensors: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(tensors);
    out
}

fn checkpoint_seeds(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let adam = micro_checkpoint(dir, "", true);
    // The same file, its settings claiming a network of 2.7 * 10^11 weights.
    let path = dir.join("big.safetensors");
    fs::write(&path, &adam).unwrap();
    let mut big: Checkpoint = checkpoint::load(&path).unwrap();
    let text =
        big.metadata["config"].replace("[\n    1,\n    1,\n    1,\n    1,\n]", "[1, 1, 1, 100000]");
    assert_ne!(text, big.metadata["config"], "the widths were found");
    big.set_meta("config", text);
    checkpoint::save(&path, &big).unwrap();
    let truncated = adam[..adam.len() / 2].to_vec();
    vec![
        ("micro_adam", adam),
        ("micro_sgd", micro_checkpoint(dir, "--optimizer sgd", true)),
        ("micro_weights_only", micro_checkpoint(dir, "", false)),
        ("network_too_big_for_its_file", fs::read(&path).unwrap()),
        ("truncated", truncated),
        (
            "tensor_1e12_values",
            safetensors_file(
                r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#,
                &[0; 8],
            ),
        ),
        (
            "f16_tensor",
            safetensors_file(
                r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
        ),
        ("header_length_2e40", (1u64 << 40).to_le_bytes().to_vec()),
    ]
}

/// A safetensors file as the `checkpoint_header` target takes it: the header, a zero byte, the
/// tensor bytes; `None` for a file too short to have that form.
fn header_and_tensors(file: &[u8]) -> Option<Vec<u8>> {
    let n = u64::from_le_bytes(file.get(..8)?.try_into().ok()?) as usize;
    let header = file.get(8..8usize.checked_add(n)?)?;
    let mut out = header.to_vec();
    out.push(0);
    out.extend_from_slice(&file[8 + n..]);
    Some(out)
}

fn config_seeds() -> Vec<(&'static str, String)> {
    let default = config("").to_toml().unwrap();
    let without_new_field: String = default
        .lines()
        .filter(|l| !l.starts_with("checkpoint_every"))
        .map(|l| format!("{l}\n"))
        .collect();
    vec![
        ("default", default.clone()),
        (
            "tiny_sgd_steps",
            config("--preset tiny --optimizer sgd --nesterov --checkpoint-every 500 --max-steps 9")
                .to_toml()
                .unwrap(),
        ),
        (
            "cifar10_cuda",
            config("--data d --dataset cifar10 --device cuda:1 --threads 2 --checkpoint-every 2h")
                .to_toml()
                .unwrap(),
        ),
        ("without_checkpoint_every", without_new_field),
        (
            "batch_size_0",
            default.replace("batch_size = 250", "batch_size = 0"),
        ),
        (
            "unknown_field",
            default.replace("[run]", "[run]\nfrobnicate = 1"),
        ),
    ]
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = !0u32;
    for &b in kind.iter().chain(data) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    out.extend_from_slice(&(!crc).to_be_bytes());
    out
}

/// A PNG header claiming 100,000 x 100,000 8-bit RGB pixels (30 GB), with a few bytes of data.
fn png_100000x100000() -> Vec<u8> {
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib stream of one stored block of two zero bytes.
    out.extend(png_chunk(b"IDAT", &[0x78, 0x01, 1, 2, 0, 0xfd, 0xff, 0, 0]));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn image_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
    let rgb = ImageBuffer::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
    let gray = ImageBuffer::from_fn(5, 3, |x, y| Luma([(x * 50 + y * 10) as u8]));
    let rgba16 = ImageBuffer::from_fn(7, 9, |x, y| {
        Rgba([x as u16 * 9000, y as u16 * 7000, 1, 40000])
    });
    let png = encoded(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png);
    let truncated = png[..png.len() / 2].to_vec();
    vec![
        ("rgb_40x30.png", png),
        (
            "gray_5x3.png",
            encoded(DynamicImage::ImageLuma8(gray.clone()), ImageFormat::Png),
        ),
        (
            "rgba16_7x9.png",
            encoded(DynamicImage::ImageRgba16(rgba16), ImageFormat::Png),
        ),
        (
            "rgb_40x30.jpg",
            encoded(DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg),
        ),
        (
            "gray_5x3.jpg",
            encoded(DynamicImage::ImageLuma8(gray), ImageFormat::Jpeg),
        ),
        ("png_100000x100000", png_100000x100000()),
        ("truncated.png", truncated),
        ("not_an_image", b"BM this is not a PNG or JPEG".to_vec()),
    ]
}
