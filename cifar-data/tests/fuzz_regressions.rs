//! Every input the fuzzers ever found a crash or hang with (`tests/fuzz/<target>/`), and the
//! committed seed corpora (`fuzz/seeds/<target>/`), fed on stable through the same harness the
//! cargo-fuzz targets run (`cifar_data::fuzz_harness`). See `fuzz/README.md`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cifar_data::format::Format;
use cifar_data::fuzz_harness;

/// A fuzz target's body: panics on a finding.
type Harness = fn(&[u8]);

/// Each cargo-fuzz target by name, with the harness its `fuzz_target!` calls. `scripts/fuzz.sh`
/// reads the names here to know where a target's findings go.
const TARGETS: [(&str, Harness); 4] = [
    ("cifar100_records", |d| {
        fuzz_harness::records(d, Format::Cifar100)
    }),
    ("cifar10_records", |d| {
        fuzz_harness::records(d, Format::Cifar10)
    }),
    ("label_names", fuzz_harness::label_names),
    ("archive", fuzz_harness::archive),
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

#[test]
fn saved_fuzz_findings_no_longer_fail() {
    run_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz"));
}

#[test]
fn seed_corpora_pass_the_harness() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, _) in TARGETS {
        assert!(
            !inputs(&seeds.join(target)).is_empty(),
            "no seeds for {target}"
        );
    }
    run_all(&seeds);
}
