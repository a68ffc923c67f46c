//! `trainer eval`: a checkpoint on the test split. Prints the test loss, top-1 and top-5 accuracy
//! and a per-class table (worst classes first); writes the confusion matrix as CSV and, with
//! `--predictions`, every test image's label, prediction and class probabilities. The test images
//! are preprocessed as the checkpoint's run preprocessed its images (the seed's sharpening, or
//! none), whichever dataset the flags name.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::EvalArgs;
use crate::config::DataConfig;
use crate::evaluate::{evaluate, EvalReport};
use crate::{data, state};

/// File name of the confusion matrix when `--confusion` is not given, beside the checkpoint.
pub const CONFUSION_FILE: &str = "confusion.csv";

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let device = super::setup_runtime(&args.runtime)?;
    let ckpt = &args.checkpoint;
    let (mut model, loaded) = state::load_model(ckpt)
        .with_context(|| format!("--checkpoint {}: cannot load the model", ckpt.display()))?;
    super::set_precision(&mut model, args.runtime.precision, &loaded, device)?;
    model.to_device(device)?;
    let data_cfg = data_config(args, &loaded.config.data);
    let dataset = data::load(&data_cfg).context("loading the test set")?;
    let classes = model.spec.classes;
    if dataset.num_classes() != classes {
        bail!(
            "--checkpoint {} was trained on {classes} classes, the dataset {} has {}; \
             pass --data/--dataset for a dataset of {classes} classes",
            ckpt.display(),
            dataset.dir.display(),
            dataset.num_classes()
        );
    }
    if dataset.fine_names != loaded.class_names {
        eprintln!(
            "warning: the dataset's class names differ from the checkpoint's (it was trained on \
             another dataset of {classes} classes); the table uses the checkpoint's names"
        );
    }

    let bar = progress_bar(dataset.test.len() as u64);
    let report = evaluate(
        &mut model,
        &dataset.test,
        args.batch_size,
        args.predictions.is_some(),
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();

    let names = &loaded.class_names;
    print_summary(ckpt, &loaded, &report);
    print_per_class(&report, names);

    let confusion_path = args
        .confusion
        .clone()
        .unwrap_or_else(|| beside(ckpt, CONFUSION_FILE));
    write_confusion(&confusion_path, &report, names)?;
    println!("confusion matrix: {}", confusion_path.display());
    if let Some(path) = &args.predictions {
        write_predictions(path, &report, names)?;
        println!("predictions: {}", path.display());
    }
    Ok(())
}

/// The data settings: the `--data`/`--dataset` flags when either is given (with the `--synth-*`
/// flags), otherwise those the checkpoint was trained with; the preprocessing always the
/// checkpoint's.
fn data_config(args: &EvalArgs, trained: &DataConfig) -> DataConfig {
    let d = &args.data;
    if d.data.is_none() && d.dataset.is_none() {
        return trained.clone();
    }
    d.config(trained.recipe())
}

/// `name` in the directory of `file`.
fn beside(file: &Path, name: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(name)
}

/// A bar on stderr counting images; hidden when stderr is not a terminal.
fn progress_bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("eval {bar:40} {pos}/{len} images [{elapsed} < {eta}]")
            .expect("the template is valid"),
    );
    bar
}

fn print_summary(ckpt: &Path, loaded: &state::Loaded, r: &EvalReport) {
    let run = &loaded.state;
    println!(
        "checkpoint {} (epoch {}, step {})",
        ckpt.display(),
        run.epoch,
        run.step
    );
    let preprocess = cifar_data::Preprocess::from(loaded.config.data.preprocess);
    println!("preprocess:  {} (the checkpoint's)", preprocess.name());
    println!("test images: {}", r.count);
    println!("test loss:   {:.6}", r.loss);
    println!("top-1:       {:.2}%", 100.0 * r.top1);
    println!("top-5:       {:.2}%", 100.0 * r.top5);
}

/// One row per class, worst accuracy first: images, correct, accuracy and the class it is most
/// often mistaken for.
fn print_per_class(r: &EvalReport, names: &[String]) {
    let accuracy = r.per_class_accuracy();
    let mut order: Vec<usize> = (0..names.len()).collect();
    // NaN (a class without test images) sorts last.
    order.sort_by(|&a, &b| {
        let key = |c: usize| {
            if accuracy[c].is_nan() {
                f64::INFINITY
            } else {
                accuracy[c]
            }
        };
        key(a).total_cmp(&key(b)).then(a.cmp(&b))
    });
    let width = names.iter().map(String::len).max().unwrap_or(5).max(5);
    println!();
    println!(
        "{:<width$}  {:>6}  {:>7}  {:>8}  most often predicted instead",
        "class", "images", "correct", "accuracy"
    );
    for c in order {
        let row = &r.confusion[c];
        let images: u32 = row.iter().sum();
        let confused = (0..row.len())
            .filter(|&p| p != c && row[p] > 0)
            .max_by(|&a, &b| row[a].cmp(&row[b]).then(b.cmp(&a)))
            .map_or(String::from("-"), |p| format!("{} ({})", names[p], row[p]));
        let acc = if images == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * accuracy[c])
        };
        println!(
            "{:<width$}  {images:>6}  {:>7}  {acc:>8}  {confused}",
            names[c], row[c]
        );
    }
    println!();
}

/// Writes `confusion[label][predicted]` as CSV: a header `label\predicted,<class names>`, then one
/// row per true class, its name first.
fn write_confusion(path: &Path, r: &EvalReport, names: &[String]) -> anyhow::Result<()> {
    write_csv(path, |w| {
        write!(w, "label\\predicted")?;
        for n in names {
            write!(w, ",{}", csv_field(n))?;
        }
        writeln!(w)?;
        for (name, row) in names.iter().zip(&r.confusion) {
            write!(w, "{}", csv_field(name))?;
            for v in row {
                write!(w, ",{v}")?;
            }
            writeln!(w)?;
        }
        Ok(())
    })
}

/// Writes one row per test image, in split order: `index,label,predicted`, then one probability
/// per class (shortest text that reads back as the same `f32`), headed by the class names.
fn write_predictions(path: &Path, r: &EvalReport, names: &[String]) -> anyhow::Result<()> {
    let probs = r
        .probabilities
        .as_ref()
        .context("the evaluation kept no probabilities")?;
    let classes = names.len();
    write_csv(path, |w| {
        write!(w, "index,label,predicted")?;
        for n in names {
            write!(w, ",{}", csv_field(n))?;
        }
        writeln!(w)?;
        for (i, (row, label)) in probs.chunks_exact(classes).zip(&r.labels).enumerate() {
            let predicted = crate::evaluate::top_k(row, 1)[0];
            write!(w, "{i},{label},{predicted}")?;
            for p in row {
                write!(w, ",{p}")?;
            }
            writeln!(w)?;
        }
        Ok(())
    })
}

/// Creates `path` (and its directory) and fills it with `body`, naming the file on any failure.
fn write_csv(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut w = BufWriter::new(File::create(path)?);
        body(&mut w)?;
        w.flush()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// `s` as one CSV field: quoted (with quotes doubled) when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("apple"), "apple");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn the_confusion_matrix_goes_beside_the_checkpoint() {
        assert_eq!(
            beside(Path::new("runs/a/best.safetensors"), CONFUSION_FILE),
            PathBuf::from("runs/a/confusion.csv")
        );
        assert_eq!(
            beside(Path::new("last.safetensors"), CONFUSION_FILE),
            PathBuf::from("confusion.csv")
        );
    }
}
