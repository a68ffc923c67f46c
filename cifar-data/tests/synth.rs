//! The synthetic dataset: determinism, the on-disk layout, and that linear models cannot solve it.

use cifar_data::format::IMAGE_BYTES;
use cifar_data::synth::{self, coarse_of, SynthConfig, SynthSplit};
use cifar_data::{normalize, Dataset, Format};
use rayon::prelude::*;

#[test]
fn generation_is_deterministic_and_thread_count_independent() {
    let cfg = SynthConfig {
        seed: 3,
        train: 150,
        test: 20,
    };
    let run = |threads, cfg: SynthConfig| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| synth::generate(&cfg, SynthSplit::Train))
    };
    let a = run(1, cfg);
    assert_eq!(a, run(2, cfg));
    assert_ne!(a.images, run(1, SynthConfig { seed: 4, ..cfg }).images);
    let test = synth::generate(&cfg, SynthSplit::Test);
    assert_ne!(a.images[..20 * IMAGE_BYTES], test.images[..]);
    assert_eq!(a.fine[..3], [0, 1, 2]);
    assert_eq!(a.fine[100], 0);
}

#[test]
fn written_dataset_loads_as_cifar100() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        seed: 1,
        train: 300,
        test: 100,
    };
    synth::write(dir.path(), &cfg).unwrap();
    let data = Dataset::load(dir.path(), Format::Cifar100).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (300, 100));
    for class in 0..100u32 {
        assert_eq!(data.train.fine().iter().filter(|&&l| l == class).count(), 3);
    }
    let coarse = data.train.coarse().unwrap();
    for (f, c) in data.train.fine().iter().zip(coarse) {
        assert_eq!(coarse_of(*f as usize) as u32, *c);
    }
    assert_eq!(data.fine_names[0], "disc_solid");
    assert_eq!(data.fine_names[99], "cross_rings");
    let coarse_names = data.coarse_names.as_ref().unwrap();
    assert_eq!(coarse_names[coarse_of(67)], "ring_patterned");
    assert_eq!(data.fine_names[67], "ring_grid");
    let empty = SynthConfig { test: 0, ..cfg };
    assert!(synth::write(&dir.path().join("x"), &empty).is_err());
}

/// Images of one split as normalised f32 rows (N, 3072) and their labels.
fn features(cfg: &SynthConfig, split: SynthSplit) -> (Vec<Vec<f32>>, Vec<usize>) {
    let r = synth::generate(cfg, split);
    let x = r
        .images
        .chunks_exact(IMAGE_BYTES)
        .map(|img| img.iter().map(|&b| normalize(b)).collect())
        .collect();
    (x, r.fine.iter().map(|&l| usize::from(l)).collect())
}

fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    let right = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    right as f64 / labels.len() as f64
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Nearest class mean on raw pixels, and softmax regression trained by SGD for a few epochs,
/// both stay far below what a small CNN reaches (chance is 1%).
#[test]
fn linear_models_fail() {
    let cfg = SynthConfig {
        seed: 0,
        train: 5_000,
        test: 1_000,
    };
    let (x_train, y_train) = features(&cfg, SynthSplit::Train);
    let (x_test, y_test) = features(&cfg, SynthSplit::Test);
    let (classes, dim) = (100, IMAGE_BYTES);

    // Nearest class mean.
    let mut means = vec![vec![0f32; dim]; classes];
    for (x, &y) in x_train.iter().zip(&y_train) {
        means[y].iter_mut().zip(x).for_each(|(m, v)| *m += v / 50.0);
    }
    let nearest: Vec<usize> = x_test
        .par_iter()
        .map(|x| {
            let dist = |m: &Vec<f32>| x.iter().zip(m).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
            (0..classes)
                .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                .unwrap()
        })
        .collect();
    let ncm = accuracy(&nearest, &y_test);

    // Softmax regression, minibatch SGD.
    let mut w = vec![vec![0f32; dim + 1]; classes];
    let (lr, batch) = (0.01f32, 50);
    let logits = |w: &Vec<Vec<f32>>, x: &[f32]| -> Vec<f32> {
        w.iter().map(|row| dot(&row[..dim], x) + row[dim]).collect()
    };
    let predict = |w: &Vec<Vec<f32>>, xs: &[Vec<f32>]| -> Vec<usize> {
        xs.par_iter()
            .map(|x| {
                let z = logits(w, x);
                (0..classes).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap()
            })
            .collect()
    };
    for _epoch in 0..4 {
        for start in (0..x_train.len()).step_by(batch) {
            let xs = &x_train[start..start + batch];
            let ys = &y_train[start..start + batch];
            // dlogits: (batch, classes) = softmax - onehot, over the batch size.
            let dz: Vec<Vec<f32>> = xs
                .par_iter()
                .zip(ys)
                .map(|(x, &y)| {
                    let z = logits(&w, x);
                    let max = z.iter().cloned().fold(f32::MIN, f32::max);
                    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
                    let s: f32 = e.iter().sum();
                    (0..classes)
                        .map(|k| (e[k] / s - f32::from(u8::from(k == y))) / batch as f32)
                        .collect()
                })
                .collect();
            w.par_iter_mut().enumerate().for_each(|(k, row)| {
                for (x, d) in xs.iter().zip(&dz) {
                    let g = lr * d[k];
                    row[..dim]
                        .iter_mut()
                        .zip(x)
                        .for_each(|(wv, xv)| *wv -= g * xv);
                    row[dim] -= g;
                }
            });
        }
    }
    let softmax_train = accuracy(&predict(&w, &x_train), &y_train);
    let softmax_test = accuracy(&predict(&w, &x_test), &y_test);
    eprintln!(
        "nearest class mean {ncm:.3}, softmax regression train {softmax_train:.3} test {softmax_test:.3}"
    );
    assert!(ncm < 0.06, "nearest class mean reaches {ncm}");
    assert!(
        softmax_test < 0.08,
        "softmax regression reaches {softmax_test}"
    );
}
