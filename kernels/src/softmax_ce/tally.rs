//! Running sums of the training loss and of the correct predictions, kept on the device that
//! computes them, so that a training loop reads them back only when it logs.
//!
//! Each [`softmax_ce_forward_tallied`] adds one minibatch: its mean loss, rounded to f32 as
//! [`super::softmax_ce_forward`] returns it and then added in f64, and its count of rows whose
//! largest probability (the first one on ties, as `f32::total_cmp` orders them) is at the label.
//! The sums run in minibatch order, so the CPU and the device add the same numbers in the same
//! order. On a CUDA device `softmax_ce.cu`'s `softmax_ce_tally` kernel adds them (one block);
//! [`LossTally::read`] is the only host read. A row of NaN probabilities (a diverged step) may
//! be counted differently on the two.

use tensor_core::{Device, Tensor};

use super::cuda;
use super::{check, cpu};
use crate::cuda::emu::{Emu, EmuBuf};
use crate::cuda::gpu::Gpu;
use crate::cuda::{Backend, TensorBackend};
use crate::Result;

/// The tally's values, in the order of the `sums` buffer of `softmax_ce_tally`.
const LAST_LOSS: usize = 0;
const LAST_CORRECT: usize = 1;
const LOSS_SUM: usize = 2;
const CORRECT_SUM: usize = 3;
/// Values in the buffer.
pub const TALLY_LEN: usize = 4;

/// Where the sums live.
enum Sums {
    Host([f64; TALLY_LEN]),
    Cuda {
        gpu: &'static Gpu,
        buf: cudarc::driver::CudaSlice<f64>,
    },
    Emu(EmuBuf<f64>),
}

/// Running sums of minibatch losses and correct predictions on one device.
pub struct LossTally {
    sums: Sums,
}

/// What a [`LossTally`] holds, read to the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TallyReport {
    /// The mean loss of the last minibatch added.
    pub last_loss: f32,
    /// Its rows predicted right.
    pub last_correct: u64,
    /// The sum of the minibatch mean losses since the start (each rounded to f32 first).
    pub loss_sum: f64,
    /// The rows predicted right since the start.
    pub correct: u64,
}

impl LossTally {
    /// A tally on `device` whose running sums start at `loss_sum` and `correct` (0 and 0 at the
    /// start of an epoch; a resumed run's saved sums in the middle of one).
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU cannot be opened or the buffer not allocated.
    pub fn new(device: Device, loss_sum: f64, correct: u64) -> Result<LossTally> {
        let mut host = [0.0; TALLY_LEN];
        host[LOSS_SUM] = loss_sum;
        host[CORRECT_SUM] = correct as f64;
        let sums = match device {
            Device::Cpu => Sums::Host(host),
            Device::Cuda(ordinal) => {
                let gpu = Gpu::shared(ordinal)?;
                Sums::Cuda {
                    gpu,
                    buf: gpu.upload(&host)?,
                }
            }
            Device::CudaEmu => Sums::Emu(Emu.upload(&host)?),
        };
        Ok(LossTally { sums })
    }

    /// The device the sums live on.
    pub fn device(&self) -> Device {
        match &self.sums {
            Sums::Host(_) => Device::Cpu,
            Sums::Cuda { gpu, .. } => Device::Cuda(gpu.ordinal()),
            Sums::Emu(_) => Device::CudaEmu,
        }
    }

    /// Whether [`LossTally::read`] is free (the sums are in host memory, no device to wait for).
    pub fn is_host(&self) -> bool {
        matches!(self.sums, Sums::Host(_))
    }

    /// The sums, read back to the host (on a GPU this waits for the launches before it).
    ///
    /// # Errors
    /// [`Error::Device`] if the copy fails.
    pub fn read(&self) -> Result<TallyReport> {
        let v = match &self.sums {
            Sums::Host(v) => *v,
            Sums::Cuda { gpu, buf } => to_array(gpu.download(buf)?),
            Sums::Emu(buf) => to_array(Emu.download(buf)?),
        };
        Ok(TallyReport {
            last_loss: v[LAST_LOSS] as f32,
            last_correct: v[LAST_CORRECT] as u64,
            loss_sum: v[LOSS_SUM],
            correct: v[CORRECT_SUM] as u64,
        })
    }
}

fn to_array(v: Vec<f64>) -> [f64; TALLY_LEN] {
    v.try_into().expect("a tally buffer holds TALLY_LEN values")
}

/// The forward of [`super::softmax_ce_forward`] without reading the loss back: writes the
/// softmax into `probs` and adds the minibatch's mean loss and correct count to `tally`.
///
/// logits: (N, classes), labels: N -> probs: (N, classes), overwritten; tally: accumulated.
///
/// # Errors
/// As [`super::softmax_ce_forward`]; [`tensor_core::Error::WrongDevice`] if the tally is on
/// another device than the logits.
pub fn softmax_ce_forward_tallied(
    probs: &mut Tensor,
    logits: &Tensor,
    labels: &[u32],
    tally: &mut LossTally,
) -> Result<()> {
    const OP: &str = "softmax_ce_forward_tallied";
    let (n, classes) = check(OP, logits, labels)?;
    probs.expect_shape(OP, "probs", logits.dims())?;
    let device = Tensor::common_device(OP, &[("probs", probs), ("logits", logits)])?;
    if device != tally.device() {
        return Err(tensor_core::Error::WrongDevice {
            op: OP,
            got: tally.device(),
            expected: device,
        }
        .into());
    }
    match &mut tally.sums {
        Sums::Host(sums) => {
            let sum = cpu::forward(probs.as_mut_slice()?, logits.as_slice()?, labels, classes);
            let loss = (sum / n as f64) as f32;
            let correct = count_correct(probs.as_slice()?, labels, classes) as f64;
            sums[LAST_LOSS] = loss as f64;
            sums[LAST_CORRECT] = correct;
            sums[LOSS_SUM] += loss as f64;
            sums[CORRECT_SUM] += correct;
            Ok(())
        }
        Sums::Cuda { gpu, buf } => forward_on(*gpu, buf, probs, logits, labels, classes),
        Sums::Emu(buf) => forward_on(&Emu, buf, probs, logits, labels, classes),
    }
}

/// The device half: the forward kernel, then the tally kernel; the labels go up once.
fn forward_on<B: TensorBackend>(
    b: &B,
    sums: &mut B::Buf<f64>,
    probs: &mut Tensor,
    logits: &Tensor,
    labels: &[u32],
    classes: usize,
) -> Result<()> {
    const OP: &str = "softmax_ce_forward_tallied";
    let labels = b.upload(labels)?;
    let mut row_loss = b.alloc::<f64>(b.len(&labels))?;
    let probs = b.buf_mut(OP, probs)?;
    cuda::softmax_ce_forward(
        b,
        probs,
        &mut row_loss,
        b.buf(OP, logits)?,
        &labels,
        classes,
    )?;
    cuda::softmax_ce_tally(b, sums, &row_loss, &*probs, &labels, classes)
}

/// Rows of `probs` (N, classes) whose largest value (the first under `f32::total_cmp`) is at
/// the label.
pub fn count_correct(probs: &[f32], labels: &[u32], classes: usize) -> usize {
    probs
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == label as usize)
        .count()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, v) in row.iter().enumerate().skip(1) {
        if v.total_cmp(&row[best]).is_gt() {
            best = j;
        }
    }
    best
}

impl std::fmt::Debug for LossTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LossTally on {}", self.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_tally_adds_the_forwards_loss_and_the_first_argmax() {
        let logits = Tensor::from_vec([3, 2], vec![1.0, 1.0, 0.0, 2.0, 3.0, -1.0]).unwrap();
        let labels = [1, 1, 0];
        let mut probs = Tensor::zeros([3, 2]);
        let loss = super::super::softmax_ce_forward(&mut probs, &logits, &labels).unwrap();
        let mut tally = LossTally::new(Device::Cpu, 1.5, 7).unwrap();
        let mut again = Tensor::zeros([3, 2]);
        for _ in 0..2 {
            softmax_ce_forward_tallied(&mut again, &logits, &labels, &mut tally).unwrap();
        }
        assert_eq!(again, probs);
        // Row 0 ties: the first index wins, so label 1 is a miss; rows 1 and 2 are hits.
        assert_eq!(
            tally.read().unwrap(),
            TallyReport {
                last_loss: loss,
                last_correct: 2,
                loss_sum: 1.5 + loss as f64 + loss as f64,
                correct: 11,
            }
        );
        assert!(tally.is_host());
        let e = softmax_ce_forward_tallied(&mut again, &logits, &[1, 1], &mut tally).unwrap_err();
        assert_eq!(
            e.to_string(),
            "softmax_ce_forward_tallied: 2 labels for logits of shape (3, 2)"
        );
    }
}
