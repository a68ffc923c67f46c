//! Opt-in timing of layer passes: where the time of a training step goes.
//!
//! Each layer's `forward` and `backward` hold a [`timed`] guard for their whole body. While a
//! [`Profile`] is being collected on the calling thread (between [`start`] and [`finish`]), the
//! guard adds the wall time of the pass to that layer kind's total; otherwise it does nothing
//! beyond reading one thread-local flag. Only durations are recorded: nothing here feeds back into
//! any result.
//!
//! On a CUDA device a pass only queues its kernels and returns: its wall time is the time to
//! launch them, and whatever first waits for the device is charged for all the work queued before
//! it. A profile started with [`start_synchronized`] calls its `sync` (a wait for the device)
//! when each timed pass starts and when it ends, so each pass is charged for its own device work,
//! at the price of a slower step (the device idles while the host waits).
//!
//! The accumulator is thread-local, not global, so two profiles on two threads never mix. Layers
//! are called from the thread that runs the model (the kernels' rayon workers are inside those
//! calls), so a pass is timed once, including its parallel work. Composite layers (blocks) are not
//! timed themselves: their parts are.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The kinds of work a training step is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Conv,
    BatchNorm,
    Relu,
    MaxPool,
    DropBlock,
    Dropout,
    Linear,
    Loss,
    /// The parameter update (clipping and the optimizer's rule), timed by whoever calls it.
    Optimizer,
}

impl LayerKind {
    /// Every kind, in the order a profile reports them.
    pub const ALL: [LayerKind; 9] = [
        LayerKind::Conv,
        LayerKind::BatchNorm,
        LayerKind::Relu,
        LayerKind::MaxPool,
        LayerKind::DropBlock,
        LayerKind::Dropout,
        LayerKind::Linear,
        LayerKind::Loss,
        LayerKind::Optimizer,
    ];

    /// A short lowercase name for tables.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::BatchNorm => "batchnorm",
            LayerKind::Relu => "relu",
            LayerKind::MaxPool => "maxpool",
            LayerKind::DropBlock => "dropblock",
            LayerKind::Dropout => "dropout",
            LayerKind::Linear => "linear",
            LayerKind::Loss => "loss",
            LayerKind::Optimizer => "optimizer",
        }
    }
}

/// Which pass of a layer: the optimizer's work counts as [`Pass::Update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
    Update,
}

impl Pass {
    /// Every pass, in the order a profile reports them.
    pub const ALL: [Pass; 3] = [Pass::Forward, Pass::Backward, Pass::Update];
}

/// Total wall time and number of calls of each (layer kind, pass).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    totals: [[(Duration, u64); Pass::ALL.len()]; LayerKind::ALL.len()],
}

impl Profile {
    /// The total time spent in `kind`'s `pass`, and how many calls it took.
    pub fn get(&self, kind: LayerKind, pass: Pass) -> (Duration, u64) {
        self.totals[kind as usize][pass as usize]
    }

    /// Adds one call of `elapsed` to (kind, pass).
    pub fn add(&mut self, kind: LayerKind, pass: Pass, elapsed: Duration) {
        let slot = &mut self.totals[kind as usize][pass as usize];
        slot.0 += elapsed;
        slot.1 += 1;
    }

    /// The sum over every kind and pass.
    pub fn total(&self) -> Duration {
        self.totals.iter().flatten().map(|&(d, _)| d).sum()
    }
}

/// The profile being collected on a thread, and the wait for the device around each pass.
struct Active {
    profile: Profile,
    sync: Option<Rc<dyn Fn()>>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Starts collecting a fresh profile on the calling thread (dropping one left unfinished).
pub fn start() {
    begin(None);
}

/// As [`start`], for a model on an asynchronous device: `sync` is called when each timed pass
/// starts (so the pass is not charged for the work queued before it) and when it ends (so it is
/// charged for its own), until [`finish`]. `sync` waits for the device; it cannot fail here, so a
/// device error is left for the next operation to report.
pub fn start_synchronized(sync: impl Fn() + 'static) {
    begin(Some(Rc::new(sync)));
}

fn begin(sync: Option<Rc<dyn Fn()>>) {
    ACTIVE.with(|p| {
        *p.borrow_mut() = Some(Active {
            profile: Profile::default(),
            sync,
        })
    });
}

/// Stops collecting on the calling thread and returns what was collected since [`start`] or
/// [`start_synchronized`] (`None` if nothing was being collected).
pub fn finish() -> Option<Profile> {
    ACTIVE.with(|p| p.borrow_mut().take().map(|a| a.profile))
}

/// A guard that, when dropped, adds the time since its creation to (kind, pass) of the calling
/// thread's profile, if one is being collected.
#[must_use = "the guard times the scope it lives in"]
pub struct Timer(Option<(LayerKind, Pass, Instant)>);

/// Times the rest of the enclosing scope as one call of `kind`'s `pass`.
pub fn timed(kind: LayerKind, pass: Pass) -> Timer {
    let Some(sync) = active_sync() else {
        return Timer(None);
    };
    if let Some(sync) = sync {
        sync();
    }
    Timer(Some((kind, pass, Instant::now())))
}

/// `None` when no profile is being collected on this thread, else its `sync`, if any. (A clone
/// of the handle, so that `sync` runs without the profile borrowed.)
fn active_sync() -> Option<Option<Rc<dyn Fn()>>> {
    ACTIVE.with(|p| p.borrow().as_ref().map(|a| a.sync.clone()))
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some((kind, pass, start)) = self.0 {
            if let Some(Some(sync)) = active_sync() {
                sync();
            }
            let elapsed = start.elapsed();
            ACTIVE.with(|p| {
                if let Some(active) = p.borrow_mut().as_mut() {
                    active.profile.add(kind, pass, elapsed);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn records_only_between_start_and_finish() {
        drop(timed(LayerKind::Relu, Pass::Forward));
        assert_eq!(finish(), None);
        start();
        {
            let _t = timed(LayerKind::Conv, Pass::Backward);
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(timed(LayerKind::Conv, Pass::Backward));
        let p = finish().unwrap();
        let (d, calls) = p.get(LayerKind::Conv, Pass::Backward);
        assert_eq!(calls, 2);
        assert!(d >= Duration::from_millis(2), "{d:?}");
        assert_eq!(p.get(LayerKind::Conv, Pass::Forward), (Duration::ZERO, 0));
        assert_eq!(p.total(), d);
        drop(timed(LayerKind::Conv, Pass::Forward));
        assert_eq!(finish(), None);
    }

    /// Each timed pass waits for the device when it starts and when it ends; the time of the
    /// wait at its end (the pass's own device work) is the pass's.
    #[test]
    fn a_synchronized_profile_waits_around_every_pass() {
        let waits = Rc::new(Cell::new(0));
        let counted = Rc::clone(&waits);
        start_synchronized(move || {
            counted.set(counted.get() + 1);
            std::thread::sleep(Duration::from_millis(2));
        });
        drop(timed(LayerKind::Conv, Pass::Forward));
        assert_eq!(waits.get(), 2);
        drop(timed(LayerKind::Loss, Pass::Backward));
        assert_eq!(waits.get(), 4);
        let p = finish().unwrap();
        let (d, calls) = p.get(LayerKind::Conv, Pass::Forward);
        assert_eq!(calls, 1);
        assert!(d >= Duration::from_millis(2), "{d:?}");
        drop(timed(LayerKind::Conv, Pass::Forward));
        assert_eq!(waits.get(), 4, "no waits once the profile is finished");
        start();
        drop(timed(LayerKind::Conv, Pass::Forward));
        assert_eq!(waits.get(), 4, "a plain profile does not wait");
        assert_eq!(finish().unwrap().get(LayerKind::Conv, Pass::Forward).1, 1);
    }

    #[test]
    fn threads_keep_their_own_profiles() {
        start();
        std::thread::spawn(|| {
            start();
            drop(timed(LayerKind::Loss, Pass::Forward));
            assert_eq!(finish().unwrap().get(LayerKind::Loss, Pass::Forward).1, 1);
        })
        .join()
        .unwrap();
        assert_eq!(finish().unwrap().get(LayerKind::Loss, Pass::Forward).1, 0);
    }
}
