//! Evaluation in [`Mode::Eval`](nn_layers::Mode::Eval): loss, top-1 and top-5 accuracy,
//! per-class accuracy and the confusion matrix over a whole split, and optionally every image's
//! class probabilities.

use std::sync::Arc;

use cifar_data::{BatchLoader, LoaderConfig, Split};
use kernels::softmax_ce::cross_entropy;
use nn_layers::{into_device, ForwardCtx, SoftmaxCrossEntropy};

use crate::error::Result;
use crate::model::ResNet;

/// The metrics of one pass over a split.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Images evaluated.
    pub count: usize,
    /// Mean softmax cross-entropy: each image's from its logits
    /// ([`kernels::softmax_ce::cross_entropy`], in f64), summed in split order, so
    /// the figure does not depend on the batch size it was evaluated at.
    pub loss: f64,
    /// Fraction whose top class is the label.
    pub top1: f64,
    /// Fraction whose label is among the five most probable classes.
    pub top5: f64,
    /// `confusion[label][predicted]`: image counts, (classes, classes).
    pub confusion: Vec<Vec<u32>>,
    /// Each image's probabilities, (count, classes) row-major, when asked for.
    pub probabilities: Option<Vec<f32>>,
    /// Each image's label, in split order.
    pub labels: Vec<u32>,
}

impl EvalReport {
    /// Accuracy of each class (NaN for a class with no image).
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| row[c] as f64 / row.iter().map(|&v| v as f64).sum::<f64>())
            .collect()
    }
}

/// Runs `model` over every image of `split` in order, `batch_size` at a time. `progress` is
/// called with the number of images done after each batch.
pub fn evaluate(
    model: &mut ResNet,
    split: &Arc<Split>,
    batch_size: usize,
    keep_probabilities: bool,
    mut progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let classes = model.spec.classes;
    let device = model.device();
    let loader = BatchLoader::new(split.clone(), LoaderConfig::eval(batch_size), 0, 0)?;
    let mut confusion = vec![vec![0u32; classes]; classes];
    let mut probabilities = keep_probabilities.then(Vec::new);
    let mut labels = Vec::with_capacity(split.len());
    let (mut loss_sum, mut top1, mut top5, mut count) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader {
        let batch = batch?;
        let n = batch.fine.len();
        let images = into_device(batch.images, device)?;
        let (logits, _) = model.forward(images, ForwardCtx::EVAL)?;
        let (_, cache) = SoftmaxCrossEntropy.forward(&logits, &batch.fine)?;
        // Not the kernel's batch mean (an f32 sum whose rounding depends on the batch size).
        let host_logits = logits.try_to_vec()?;
        for (row, &label) in host_logits.chunks_exact(classes).zip(&batch.fine) {
            loss_sum += cross_entropy(row, label as usize);
        }
        let probs = &cache.probs().try_to_vec()?;
        for (row, &label) in probs.chunks_exact(classes).zip(&batch.fine) {
            let ranked = top_k(row, 5);
            confusion[label as usize][ranked[0]] += 1;
            top1 += (ranked[0] == label as usize) as usize;
            top5 += ranked.contains(&(label as usize)) as usize;
        }
        if let Some(p) = probabilities.as_mut() {
            p.extend_from_slice(probs);
        }
        labels.extend_from_slice(&batch.fine);
        count += n;
        progress(count);
    }
    let denom = count.max(1) as f64;
    Ok(EvalReport {
        count,
        loss: loss_sum / denom,
        top1: top1 as f64 / denom,
        top5: top5 as f64 / denom,
        confusion,
        probabilities,
        labels,
    })
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5, 0.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}
