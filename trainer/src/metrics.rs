//! The run directory's CSV logs, and the plots drawn from them.
//!
//! - `metrics.csv`: one [`EpochRecord`] per epoch.
//! - `steps.csv`: one [`StepRecord`] per logged step (every `--log-every` steps).
//!
//! Rows are appended as training goes, so a resumed run continues the same files; before resuming,
//! [`truncate_after`] drops the rows written after the checkpoint being resumed (and a line torn
//! by a crash). Accuracies are fractions in [0, 1]; the plots show them in percent. Numbers are
//! written in Rust's shortest round-trip form, so reading a file gives back the very same values.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::memory::MemoryUse;
use crate::plot::{Chart, Series};

/// File name of the per-epoch log in a run directory.
pub const METRICS_FILE: &str = "metrics.csv";
/// File name of the per-step log in a run directory.
pub const STEPS_FILE: &str = "steps.csv";

/// One row of `metrics.csv`: what an epoch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// The epoch just finished, counted from 1.
    pub epoch: u64,
    /// Optimizer steps done so far.
    pub step: u64,
    /// Mean of the epoch's minibatch losses (training mode, augmented).
    pub train_loss: f64,
    /// Mean of the epoch's minibatch accuracies.
    pub train_acc: f64,
    /// Loss on the whole training set in eval mode, when measured (`--eval-train`).
    pub train_eval_loss: Option<f64>,
    /// Accuracy on the whole training set in eval mode, when measured.
    pub train_eval_acc: Option<f64>,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// DropBlock keep probability during the epoch.
    pub keep_prob: f64,
    /// Wall-clock seconds the epoch took, evaluation included.
    pub seconds: f64,
    /// Memory in use after the epoch (the process's resident set now and at its peak, the
    /// GPU's used memory): a run whose memory grows from epoch to epoch shows here.
    pub memory: MemoryUse,
}

/// One row of `steps.csv`: a logged minibatch.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Optimizer steps done, counting this one.
    pub step: u64,
    pub loss: f64,
    pub acc: f64,
    pub lr: f64,
    pub keep_prob: f64,
}

/// A row type of one of the CSV logs.
pub trait CsvRecord: Sized {
    /// The column names, written as the file's first line.
    const HEADER: &'static [&'static str];
    /// The position of the row in training (epoch or step), used by [`truncate_after`].
    fn key(&self) -> u64;
    /// The row's fields, in [`CsvRecord::HEADER`] order.
    fn fields(&self) -> Vec<String>;
    /// Parses a row; the error says which field is wrong.
    fn parse(fields: &[&str]) -> std::result::Result<Self, String>;
}

impl CsvRecord for EpochRecord {
    const HEADER: &'static [&'static str] = &[
        "epoch",
        "step",
        "train_loss",
        "train_acc",
        "train_eval_loss",
        "train_eval_acc",
        "test_loss",
        "test_top1",
        "test_top5",
        "lr",
        "keep_prob",
        "seconds",
        "rss_mib",
        "peak_rss_mib",
        "gpu_mib",
    ];

    fn key(&self) -> u64 {
        self.epoch
    }

    fn fields(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        vec![
            self.epoch.to_string(),
            self.step.to_string(),
            self.train_loss.to_string(),
            self.train_acc.to_string(),
            opt(self.train_eval_loss),
            opt(self.train_eval_acc),
            self.test_loss.to_string(),
            self.test_top1.to_string(),
            self.test_top5.to_string(),
            self.lr.to_string(),
            self.keep_prob.to_string(),
            self.seconds.to_string(),
            opt(self.memory.rss_mib),
            opt(self.memory.peak_rss_mib),
            opt(self.memory.gpu_mib),
        ]
    }

    fn parse(f: &[&str]) -> std::result::Result<Self, String> {
        let h = Self::HEADER;
        Ok(EpochRecord {
            epoch: field(f, 0, h)?,
            step: field(f, 1, h)?,
            train_loss: field(f, 2, h)?,
            train_acc: field(f, 3, h)?,
            train_eval_loss: optional(f, 4, h)?,
            train_eval_acc: optional(f, 5, h)?,
            test_loss: field(f, 6, h)?,
            test_top1: field(f, 7, h)?,
            test_top5: field(f, 8, h)?,
            lr: field(f, 9, h)?,
            keep_prob: field(f, 10, h)?,
            seconds: field(f, 11, h)?,
            memory: MemoryUse {
                rss_mib: optional(f, 12, h)?,
                peak_rss_mib: optional(f, 13, h)?,
                gpu_mib: optional(f, 14, h)?,
            },
        })
    }
}

impl CsvRecord for StepRecord {
    const HEADER: &'static [&'static str] = &["step", "loss", "acc", "lr", "keep_prob"];

    fn key(&self) -> u64 {
        self.step
    }

    fn fields(&self) -> Vec<String> {
        vec![
            self.step.to_string(),
            self.loss.to_string(),
            self.acc.to_string(),
            self.lr.to_string(),
            self.keep_prob.to_string(),
        ]
    }

    fn parse(f: &[&str]) -> std::result::Result<Self, String> {
        let h = Self::HEADER;
        Ok(StepRecord {
            step: field(f, 0, h)?,
            loss: field(f, 1, h)?,
            acc: field(f, 2, h)?,
            lr: field(f, 3, h)?,
            keep_prob: field(f, 4, h)?,
        })
    }
}

/// Field `i` parsed as `T`; the error names the column and the text.
fn field<T: std::str::FromStr>(
    f: &[&str],
    i: usize,
    header: &[&str],
) -> std::result::Result<T, String> {
    let text = f
        .get(i)
        .ok_or_else(|| format!("column {} is missing", header[i]))?;
    text.parse()
        .map_err(|_| format!("column {} has {text:?}, not a number", header[i]))
}

/// Field `i`, empty meaning "not measured".
fn optional(f: &[&str], i: usize, header: &[&str]) -> std::result::Result<Option<f64>, String> {
    match f.get(i) {
        Some(&"") => Ok(None),
        _ => field(f, i, header).map(Some),
    }
}

fn header_line<R: CsvRecord>() -> String {
    R::HEADER.join(",")
}

/// Appends `record` to the CSV at `path`, creating it with its header line if it does not exist
/// or is empty. An existing file with another header is refused rather than mixed.
pub fn append<R: CsvRecord>(path: &Path, record: &R) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = String::new();
    if existing.is_empty() {
        out.push_str(&header_line::<R>());
        out.push('\n');
    } else {
        check_header::<R>(path, existing.lines().next().unwrap_or(""))?;
        if !existing.ends_with('\n') {
            return Err(Error::format(
                path,
                "the last line is incomplete (a crash mid-write?): truncate_after repairs it",
            ));
        }
    }
    out.push_str(&record.fields().join(","));
    out.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(out.as_bytes())
        .map_err(|e| Error::io(path, e))
}

fn check_header<R: CsvRecord>(path: &Path, first: &str) -> Result<()> {
    let expected = header_line::<R>();
    if first.trim_end() == expected {
        Ok(())
    } else {
        Err(Error::format(
            path,
            format!("header is {first:?}, expected {expected:?}"),
        ))
    }
}

/// Parses the text of a CSV log. With `allow_torn_tail`, a last line without a newline that does
/// not parse (a write cut short by a crash) is dropped instead of refused.
fn parse_rows<R: CsvRecord>(path: &Path, text: &str, allow_torn_tail: bool) -> Result<Vec<R>> {
    let mut lines = text.lines();
    let Some(first) = lines.next() else {
        return Ok(Vec::new());
    };
    check_header::<R>(path, first)?;
    let body: Vec<&str> = lines.collect();
    let mut rows = Vec::with_capacity(body.len());
    for (i, line) in body.iter().enumerate() {
        let fields: Vec<&str> = line.trim_end().split(',').collect();
        let parsed = if fields.len() == R::HEADER.len() {
            R::parse(&fields)
        } else {
            Err(format!(
                "{} fields, expected {}",
                fields.len(),
                R::HEADER.len()
            ))
        };
        match parsed {
            Ok(row) => rows.push(row),
            Err(_) if allow_torn_tail && i + 1 == body.len() && !text.ends_with('\n') => {}
            Err(msg) => return Err(Error::format(path, format!("line {}: {msg}", i + 2))),
        }
    }
    Ok(rows)
}

/// Reads every row of the CSV log at `path` (a missing or empty file has none).
pub fn read<R: CsvRecord>(path: &Path) -> Result<Vec<R>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_rows(path, &text, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Keeps only the rows whose key (epoch or step) is at most `last`, and drops a line torn by a
/// crash: what a run resumed from the checkpoint taken at `last` must continue from. The file is
/// rewritten atomically (temporary file, then rename); a missing file stays missing.
pub fn truncate_after<R: CsvRecord>(path: &Path, last: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let rows: Vec<R> = parse_rows(path, &text, true)?;
    let mut out = header_line::<R>();
    out.push('\n');
    for row in rows.iter().filter(|r| r.key() <= last) {
        out.push_str(&row.fields().join(","));
        out.push('\n');
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, out).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The per-epoch charts: loss (minibatch mean, training set, test set) and accuracy in percent
/// (minibatch, training set, test top-1 and top-5). The training-set series appear only when some
/// epoch measured them. None when there is no epoch yet.
pub fn epoch_charts(rows: &[EpochRecord]) -> Option<[Chart; 2]> {
    if rows.is_empty() {
        return None;
    }
    let series = |name: &str, value: &dyn Fn(&EpochRecord) -> Option<f64>| {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| value(r).map(|v| (r.epoch as f64, v)))
            .collect();
        (!points.is_empty()).then(|| Series::new(name, points))
    };
    let pct = |v: f64| 100.0 * v;
    let loss = [
        series("train (minibatch)", &|r| Some(r.train_loss)),
        series("train set", &|r| r.train_eval_loss),
        series("test set", &|r| Some(r.test_loss)),
    ];
    let acc = [
        series("train (minibatch)", &|r| Some(pct(r.train_acc))),
        series("train set", &|r| r.train_eval_acc.map(pct)),
        series("test top-1", &|r| Some(pct(r.test_top1))),
        series("test top-5", &|r| Some(pct(r.test_top5))),
    ];
    Some([
        Chart {
            title: "Loss per epoch".into(),
            x_label: "epoch".into(),
            y_label: "cross-entropy loss".into(),
            series: loss.into_iter().flatten().collect(),
        },
        Chart {
            title: "Accuracy per epoch".into(),
            x_label: "epoch".into(),
            y_label: "accuracy (%)".into(),
            series: acc.into_iter().flatten().collect(),
        },
    ])
}

/// The per-step charts: minibatch loss and minibatch accuracy (percent) at each logged step.
/// None when nothing was logged yet.
pub fn step_charts(rows: &[StepRecord]) -> Option<[Chart; 2]> {
    if rows.is_empty() {
        return None;
    }
    let points =
        |value: fn(&StepRecord) -> f64| rows.iter().map(|r| (r.step as f64, value(r))).collect();
    Some([
        Chart {
            title: "Minibatch loss per logged step".into(),
            x_label: "step".into(),
            y_label: "cross-entropy loss".into(),
            series: vec![Series::new("minibatch", points(|r| r.loss))],
        },
        Chart {
            title: "Minibatch accuracy per logged step".into(),
            x_label: "step".into(),
            y_label: "accuracy (%)".into(),
            series: vec![Series::new("minibatch", points(|r| 100.0 * r.acc))],
        },
    ])
}

/// Reads `metrics.csv` and `steps.csv` in `run_dir` and writes `loss_per_epoch.png`,
/// `accuracy_per_epoch.png`, `loss_per_step.png` and `accuracy_per_step.png` beside them (a log
/// with no rows yet gives no plot). Returns the paths written.
pub fn write_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let epochs: Vec<EpochRecord> = read(&run_dir.join(METRICS_FILE))?;
    let steps: Vec<StepRecord> = read(&run_dir.join(STEPS_FILE))?;
    let mut written = Vec::new();
    let mut save = |charts: Option<[Chart; 2]>, names: [&str; 2]| -> Result<()> {
        for (chart, name) in charts.into_iter().flatten().zip(names) {
            let path = run_dir.join(name);
            chart.save(&path)?;
            written.push(path);
        }
        Ok(())
    };
    save(
        epoch_charts(&epochs),
        ["loss_per_epoch.png", "accuracy_per_epoch.png"],
    )?;
    save(
        step_charts(&steps),
        ["loss_per_step.png", "accuracy_per_step.png"],
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: u64, train_eval: bool) -> EpochRecord {
        let e = epoch as f64;
        EpochRecord {
            epoch,
            step: 200 * epoch,
            train_loss: 4.6 / e,
            train_acc: 0.1 * e.sqrt(),
            train_eval_loss: train_eval.then_some(4.5 / e),
            train_eval_acc: train_eval.then_some(0.11 * e.sqrt()),
            test_loss: 4.7 / e + 0.1,
            test_top1: 0.09 * e.sqrt(),
            test_top5: 0.3 * e.sqrt(),
            lr: 5e-4 * 0.98f64.powi(epoch as i32 - 1),
            keep_prob: 1.0 - 0.005 * (epoch - 1) as f64,
            seconds: 12.25 + e / 3.0,
            memory: MemoryUse {
                rss_mib: Some(100.5 + e),
                peak_rss_mib: Some(1875.25),
                gpu_mib: train_eval.then_some(2048.0),
            },
        }
    }

    fn step(step: u64) -> StepRecord {
        StepRecord {
            step,
            loss: 4.6 - step as f64 * 1e-3,
            acc: step as f64 / 1e4,
            lr: 5e-4,
            keep_prob: 1.0,
        }
    }

    #[test]
    fn rows_round_trip_exactly_and_resumed_runs_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let rows = vec![epoch(1, true), epoch(2, false), epoch(3, true)];
        for r in &rows[..2] {
            append(&path, r).unwrap();
        }
        // A "resumed run" opens the same file again and goes on.
        append(&path, &rows[2]).unwrap();
        assert_eq!(read::<EpochRecord>(&path).unwrap(), rows);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            4,
            "one header and three rows:\n{text}"
        );
        assert!(text.starts_with("epoch,step,train_loss,train_acc,train_eval_loss,"));
        assert!(
            text.contains(",,"),
            "the unmeasured train-set fields are empty:\n{text}"
        );
        assert!(read::<EpochRecord>(&dir.path().join("absent.csv"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn truncate_after_keeps_the_rows_up_to_the_checkpoint_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STEPS_FILE);
        for s in [25, 50, 75, 100] {
            append(&path, &step(s)).unwrap();
        }
        // A crash in the middle of writing a row.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"125,4.4").unwrap();
        assert!(read::<StepRecord>(&path).is_err());
        assert!(append(&path, &step(125))
            .unwrap_err()
            .to_string()
            .contains("incomplete"));

        truncate_after::<StepRecord>(&path, 50).unwrap();
        assert_eq!(read::<StepRecord>(&path).unwrap(), vec![step(25), step(50)]);
        append(&path, &step(75)).unwrap();
        assert_eq!(
            read::<StepRecord>(&path).unwrap(),
            vec![step(25), step(50), step(75)]
        );
        truncate_after::<StepRecord>(&dir.path().join("absent.csv"), 10).unwrap();
        assert!(!dir.path().join("absent.csv").exists());
    }

    #[test]
    fn foreign_or_damaged_files_are_refused_with_the_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, "step,loss,acc,lr,keep_prob\n").unwrap();
        let err = append(&path, &epoch(1, false)).unwrap_err().to_string();
        assert!(
            err.contains("metrics.csv") && err.contains("header is"),
            "{err}"
        );

        append(&dir.path().join("s.csv"), &step(25)).unwrap();
        let bad = dir.path().join("s.csv");
        let mut text = std::fs::read_to_string(&bad).unwrap();
        text.push_str("50,oops,0.1,5e-4,1\n");
        std::fs::write(&bad, &text).unwrap();
        let err = read::<StepRecord>(&bad).unwrap_err().to_string();
        assert!(
            err.contains("s.csv: line 3: column loss has \"oops\""),
            "{err}"
        );
        // A complete but wrong line is not mistaken for a torn one.
        assert!(truncate_after::<StepRecord>(&bad, 100).is_err());
        let err = StepRecord::parse(&["1", "2.5"]).unwrap_err();
        assert_eq!(err, "column acc is missing");
    }

    #[test]
    fn plots_are_drawn_from_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            write_plots(dir.path()).unwrap().is_empty(),
            "no rows, no plots"
        );
        for e in 1..=5 {
            append(&dir.path().join(METRICS_FILE), &epoch(e, e % 2 == 0)).unwrap();
        }
        for s in (25..=1000).step_by(25) {
            append(&dir.path().join(STEPS_FILE), &step(s)).unwrap();
        }
        let written = write_plots(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "loss_per_epoch.png",
                "accuracy_per_epoch.png",
                "loss_per_step.png",
                "accuracy_per_step.png"
            ]
        );
        for p in &written {
            let img = image::open(p).unwrap();
            assert_eq!((img.width(), img.height()), crate::plot::DEFAULT_SIZE);
        }
        let [loss, acc] = epoch_charts(&[epoch(1, false), epoch(2, true)]).unwrap();
        assert_eq!(loss.series.len(), 3);
        assert_eq!(
            loss.series[1].points,
            vec![(2.0, 4.5 / 2.0)],
            "train set only where measured"
        );
        assert_eq!(acc.series.len(), 4);
        assert_eq!(acc.series[2].points[0], (1.0, 9.0));
        let [loss, _] = epoch_charts(&[epoch(1, false)]).unwrap();
        assert_eq!(
            loss.series.len(),
            2,
            "no train-set series when never measured"
        );
    }
}
