//! `scripts/reproduce.sh` end to end in its quick mode (the synthetic dataset, the tiny network,
//! one epoch, the trainer this test was built with): the run, the evaluation of its last
//! checkpoint, and `REPORT.md` with the seed's figures beside the run's.

use std::path::Path;
use std::process::Command;

use trainer::metrics::{self, EpochRecord};

#[test]
fn reproduce_sh_trains_evaluates_and_reports_beside_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("repro");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new("bash")
        .env("KERNELS_CONV_CALIBRATE", "0")
        .arg(root.join("scripts/reproduce.sh"))
        .args(["--synthetic", "--synth-train", "200", "--synth-test", "100"])
        .args(["--preset", "tiny", "--epochs", "1", "--device", "cpu"])
        .arg("--run-dir")
        .arg(&run)
        .args(["--trainer", env!("CARGO_BIN_EXE_trainer"), "--"])
        .args(["--batch-size", "50"])
        .output()
        .expect("bash runs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "reproduce.sh failed:\n{err}");

    let report = std::fs::read_to_string(run.join("REPORT.md")).unwrap();
    let last: EpochRecord = metrics::read(&run.join(metrics::METRICS_FILE))
        .unwrap()
        .pop()
        .unwrap();
    let eval = std::fs::read_to_string(run.join("eval.txt")).unwrap();
    let commit = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    for needle in [
        "| the seed (TensorFlow, 2019; last epoch, published) | 70.7% | | 99.5% | 1.2815 |".into(),
        format!(
            "| this run, last epoch (1; `last.safetensors`) | {} | {} | {} | {:.4} |",
            pct(last.test_top1),
            pct(last.test_top5),
            pct(last.train_eval_acc.unwrap()),
            last.test_loss
        ),
        "**Not the seed's recipe:** the data is the synthetic dataset, not CIFAR-100; --epochs 1, \
         not the seed's 75"
            .into(),
        "best on the test set, so optimistic".into(),
        "![accuracy_per_epoch](accuracy_per_epoch.png)".into(),
        "--epochs 1 --preset tiny".into(),
        "trainer eval --checkpoint".into(),
        format!("- commit: {commit}"),
        "- device: cpu (".into(),
        "- precision: fp32".into(),
        "- wall time: 0:00:".into(),
    ] {
        assert!(
            report.contains(&needle),
            "{needle:?} missing from:\n{report}"
        );
    }
    // The evaluation of last.safetensors is quoted, and agrees with the last epoch.
    let test_loss = format!("test loss:   {:.6}", last.test_loss);
    assert!(eval.contains(&test_loss), "{eval}");
    assert!(report.contains(&test_loss), "{report}");
    // Every file the report links to is there.
    for link in report.split("](").skip(1) {
        let target = &link[..link.find(')').unwrap()];
        assert!(run.join(target).is_file(), "{target} is linked but missing");
    }
}
