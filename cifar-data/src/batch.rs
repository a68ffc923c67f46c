//! Batching: the epoch's order, batch assembly (gather, augment, normalise), and a loader that
//! builds batches on a background thread a few steps ahead of training.
//!
//! Everything is a pure function of (seed, epoch, batch position): the order of epoch e is a
//! seeded shuffle keyed by (seed, e) ([`Order::Shuffle`]) or by (seed, 0) for every epoch
//! ([`Order::Fixed`]), and the augmentation is keyed by (seed, e, batch position, dataset index)
//! ([`crate::augment::ImageKey`]). A loader started at batch b of epoch e therefore yields exactly
//! the batches an uninterrupted run would have, which is what resuming from a checkpoint needs.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use tensor_core::Tensor;

use crate::augment::{augment_batch, keyed_rng, Augment};
use crate::dataset::Split;
use crate::format::{IMAGE_BYTES, SIDE};
use crate::{Error, Result};

/// The order images are visited in within an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// The seed's recipe (SPEC "Order"): one seeded shuffle, then the same order every epoch.
    /// It is the order [`Order::Shuffle`] gives epoch 0.
    Fixed,
    /// A new seeded shuffle every epoch.
    Shuffle,
    /// Dataset order (evaluation).
    Sequential,
}

/// What to do with the last batch of an epoch when it is smaller than the batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastBatch {
    Keep,
    Drop,
}

/// How a loader cuts an epoch into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub order: Order,
    pub last: LastBatch,
    pub augment: Augment,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Batches built ahead of the consumer (the channel's capacity), at least 1.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training as the seed's recipe: [`Order::Fixed`], augmented with `augment`, the last
    /// partial batch kept, 3 batches ahead. Set `order` to [`Order::Shuffle`] for a new order
    /// every epoch.
    pub fn train(batch_size: usize, augment: Augment, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            order: Order::Fixed,
            last: LastBatch::Keep,
            augment,
            seed,
            prefetch: 3,
        }
    }

    /// Evaluation: dataset order, no augmentation, every image, 2 batches ahead.
    pub fn eval(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            order: Order::Sequential,
            last: LastBatch::Keep,
            augment: Augment::None,
            seed: 0,
            prefetch: 2,
        }
    }

    /// Number of batches in an epoch of `n` images.
    pub fn num_batches(&self, n: usize) -> usize {
        match self.last {
            LastBatch::Keep => n.div_ceil(self.batch_size.max(1)),
            LastBatch::Drop => n / self.batch_size.max(1),
        }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.batch_size == 0 || self.prefetch == 0 {
            return Err(Error::Invalid {
                op,
                msg: format!(
                    "batch size {} and prefetch {} must both be at least 1",
                    self.batch_size, self.prefetch
                ),
            });
        }
        Ok(())
    }
}

/// One batch, ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// (N, 3, 32, 32), normalised: x' = (x - 127.5) / 127.5, in [-1, 1].
    pub images: Tensor,
    /// (N,) fine labels.
    pub fine: Vec<u32>,
    /// (N,) coarse labels, CIFAR-100 only.
    pub coarse: Option<Vec<u32>>,
    /// (N,) dataset indices of the images.
    pub indices: Vec<usize>,
    pub epoch: u64,
    /// Position of this batch within its epoch, from 0.
    pub position: usize,
}

/// The dataset indices of epoch `epoch` in visiting order: 0..n shuffled with the RNG keyed by
/// (seed, epoch) for [`Order::Shuffle`], by (seed, 0) for [`Order::Fixed`]; 0..n for
/// [`Order::Sequential`].
pub fn epoch_order(n: usize, order: Order, seed: u64, epoch: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    let key_epoch = match order {
        Order::Sequential => return indices,
        Order::Fixed => 0,
        Order::Shuffle => epoch,
    };
    indices.shuffle(&mut keyed_rng(*b"shuffle\0", seed, key_epoch, 0));
    indices
}

/// Converts bytes to the network's input range: x' = (x - 127.5) / 127.5.
pub fn normalize(x: u8) -> f32 {
    (f32::from(x) - 127.5) / 127.5
}

/// Gathers the images `indices` of `split` as batch `position` of `epoch`, augments them
/// ([`augment_batch`]) and normalises them. indices: (N,) -> Batch with images (N, 3, 32, 32).
///
/// # Errors
/// [`Error::Invalid`] if `indices` is empty or an index is out of range.
pub fn make_batch(
    split: &Split,
    indices: &[usize],
    augment: Augment,
    seed: u64,
    epoch: u64,
    position: usize,
) -> Result<Batch> {
    if indices.is_empty() {
        return Err(Error::Invalid {
            op: "make_batch",
            msg: "no indices".into(),
        });
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= split.len()) {
        return Err(Error::Invalid {
            op: "make_batch",
            msg: format!(
                "index {bad} out of range for a split of {} images",
                split.len()
            ),
        });
    }
    let n = indices.len();
    let mut bytes = vec![0u8; n * IMAGE_BYTES];
    bytes
        .par_chunks_exact_mut(IMAGE_BYTES)
        .zip(indices)
        .for_each(|(dst, &i)| dst.copy_from_slice(split.image(i)));
    augment_batch(&mut bytes, indices, augment, seed, epoch, position as u64)?;
    let lut: [f32; 256] = std::array::from_fn(|x| normalize(x as u8));
    let mut values = vec![0f32; bytes.len()];
    values
        .par_chunks_mut(IMAGE_BYTES)
        .zip(bytes.par_chunks(IMAGE_BYTES))
        .for_each(|(v, b)| {
            v.iter_mut()
                .zip(b)
                .for_each(|(v, &b)| *v = lut[usize::from(b)])
        });
    let images = Tensor::from_vec([n, 3, SIDE, SIDE], values)?;
    Ok(Batch {
        images,
        fine: indices.iter().map(|&i| split.fine()[i]).collect(),
        coarse: split
            .coarse()
            .map(|c| indices.iter().map(|&i| c[i]).collect()),
        indices: indices.to_vec(),
        epoch,
        position,
    })
}

/// Batch `position` of epoch `epoch`, built in the calling thread: the same batch the loader
/// yields at that position.
///
/// # Errors
/// [`Error::Invalid`] on a bad configuration or a position past the end of the epoch.
pub fn batch_at(split: &Split, cfg: &LoaderConfig, epoch: u64, position: usize) -> Result<Batch> {
    cfg.check("batch_at")?;
    let order = epoch_order(split.len(), cfg.order, cfg.seed, epoch);
    batch_from_order(split, cfg, &order, epoch, position)
}

fn batch_from_order(
    split: &Split,
    cfg: &LoaderConfig,
    order: &[usize],
    epoch: u64,
    position: usize,
) -> Result<Batch> {
    let batches = cfg.num_batches(order.len());
    if position >= batches {
        return Err(Error::Invalid {
            op: "batch_at",
            msg: format!("batch {position} of an epoch of {batches} batches"),
        });
    }
    let start = position * cfg.batch_size;
    let end = (start + cfg.batch_size).min(order.len());
    make_batch(
        split,
        &order[start..end],
        cfg.augment,
        cfg.seed,
        epoch,
        position,
    )
}

/// Yields the batches of one epoch, from a start position to the end, built on a background
/// thread at most `prefetch` batches ahead.
///
/// A panic or error in the background thread comes out of [`Iterator::next`] as an `Err` (after
/// which the iterator ends); dropping the loader mid-epoch stops and joins the thread.
pub struct BatchLoader {
    /// `None` once dropped, so the producer's blocked `send` returns.
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    remaining: usize,
    finished: bool,
}

impl BatchLoader {
    /// Starts a loader over batches `start..` of epoch `epoch` of `split`.
    ///
    /// # Errors
    /// [`Error::Invalid`] on a zero batch size or prefetch, or a start past the end of the epoch
    /// (a start equal to the number of batches gives an empty loader).
    pub fn new(
        split: Arc<Split>,
        cfg: LoaderConfig,
        epoch: u64,
        start: usize,
    ) -> Result<BatchLoader> {
        cfg.check("BatchLoader::new")?;
        let batches = cfg.num_batches(split.len());
        if start > batches {
            return Err(Error::Invalid {
                op: "BatchLoader::new",
                msg: format!("start batch {start} past the end of an epoch of {batches} batches"),
            });
        }
        let order = epoch_order(split.len(), cfg.order, cfg.seed, epoch);
        BatchLoader::from_fn(start..batches, cfg.prefetch, move |position| {
            batch_from_order(&split, &cfg, &order, epoch, position)
        })
    }

    /// A loader that calls `produce(position)` on a background thread for each position of
    /// `positions`, in order, at most `prefetch` batches ahead. The first `Err` ends the stream.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `prefetch` is 0; [`Error::Loader`] if the thread cannot start.
    pub fn from_fn<F>(
        positions: Range<usize>,
        prefetch: usize,
        mut produce: F,
    ) -> Result<BatchLoader>
    where
        F: FnMut(usize) -> Result<Batch> + Send + 'static,
    {
        if prefetch == 0 {
            return Err(Error::Invalid {
                op: "BatchLoader::from_fn",
                msg: "prefetch must be at least 1".into(),
            });
        }
        let remaining = positions.len();
        let (tx, rx) = mpsc::sync_channel(prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("batch-loader".into())
            .spawn(move || {
                for position in positions {
                    if thread_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let batch = produce(position);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Loader(format!("cannot start the background thread: {e}")))?;
        Ok(BatchLoader {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            remaining,
            finished: false,
        })
    }

    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Joins the producer after its channel closed early and turns a panic into an error.
    fn producer_failure(&mut self) -> Error {
        let reason = match self.handle.take().map(JoinHandle::join) {
            Some(Err(payload)) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                format!("the background thread panicked: {msg}")
            }
            _ => "the background thread stopped before the end of the epoch".into(),
        };
        Error::Loader(format!("{reason} ({} batches never came)", self.remaining))
    }
}

impl Iterator for BatchLoader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished || self.remaining == 0 {
            return None;
        }
        let received = self.rx.as_ref().map(Receiver::recv)?;
        match received {
            Ok(Ok(batch)) => {
                self.remaining -= 1;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.finished = true;
                Some(Err(e))
            }
            Err(RecvError) => {
                self.finished = true;
                Some(Err(self.producer_failure()))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the receiver makes a `send` blocked on a full channel return at once.
        self.rx = None;
        if let Some(handle) = self.handle.take() {
            // A panic there was already reported by `next`, or nobody asked for the rest of the
            // epoch: either way there is nothing left to report.
            let _ = handle.join();
        }
    }
}
