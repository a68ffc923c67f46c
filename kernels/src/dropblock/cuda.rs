//! DropBlock on a CUDA device: the launch code of dropblock.cu, written once against [`Backend`]
//! for the GPU and the emulated device.

use crate::cuda::launch::{check_len, count, params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::philox::cuda::MaskKeyC;
use crate::philox::MaskKey;
use crate::{Error, Result};

/// dropblock.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    dropblock,
    headers: [crate::philox::cuda::HEADER],
    params: [MaskKeyC, DropBlockMaskParams, DropBlockScaleParams, DropBlockApplyParams],
);

params! {
    /// dropblock.cu `DropBlockMaskParams`: -> mask: (planes, h, w) u8, kept: (planes).
    pub struct DropBlockMaskParams {
        pub mask: u64,
        pub kept: u64,
        pub key: MaskKeyC,
        pub gamma: f32,
        pub planes: u32,
        pub h: u32,
        pub w: u32,
        pub block: u32,
    }

    /// dropblock.cu `DropBlockScaleParams`: kept: (planes) -> scale: (1).
    pub struct DropBlockScaleParams {
        pub scale: u64,
        pub kept: u64,
        pub planes: u32,
        pub n: u32,
    }

    /// dropblock.cu `DropBlockApplyParams`: inp, mask: (n), scale: (1) -> out: (n).
    pub struct DropBlockApplyParams {
        pub out: u64,
        pub inp: u64,
        pub mask: u64,
        pub scale: u64,
        pub n: u32,
    }
}

pub const DROPBLOCK_MASK: Kernel<DropBlockMaskParams> = kernel!(MODULE, dropblock_mask);
pub const DROPBLOCK_SCALE: Kernel<DropBlockScaleParams> = kernel!(MODULE, dropblock_scale);
pub const DROPBLOCK_APPLY: Kernel<DropBlockApplyParams> = kernel!(MODULE, dropblock_apply);

/// Threads per block of the DropBlock scale kernel, and the most of the mask kernel (which uses
/// one warp per 32 cells of a plane up to that). dropblock.cu takes any multiple of 32 up to 1024
/// (its `block_sum`).
const DROPBLOCK_THREADS: u32 = 256;
const _: () = assert!(DROPBLOCK_THREADS.is_multiple_of(32) && DROPBLOCK_THREADS <= 1024);

/// Most blocks of a `dropblock_mask` launch (one plane each; more planes loop).
const DROPBLOCK_MAX_BLOCKS: usize = 65_535;

/// Most cells of a DropBlock sampling grid, (H - b + 1) x (W - b + 1): the mask kernel holds the
/// grid's drawn centres in shared memory, one byte each, within the 48 KiB any launch may use
/// (less 1 KiB for the kernel's static shared memory: a test checks it against ptxas's report).
pub const DROPBLOCK_MAX_GRID: usize = 47 * 1024;

/// Draws a DropBlock mask for a map of `dims` (N, C, H, W), as [`crate::dropblock::dropblock_mask`]:
/// the same Philox draws, so the same mask, and its rescale factor, computed on the device.
/// mask: (N, C, H, W), 1 kept, 0 dropped; scale: (1), mask.len() / mask.sum() or 0; both
/// overwritten. Returns false (both untouched) when DropBlock is the identity.
///
/// # Errors
/// A bad keep probability or block size, buffers of the wrong size, or a sampling grid of more
/// than [`DROPBLOCK_MAX_GRID`] cells.
pub fn dropblock_mask<B: Backend>(
    dev: &B,
    mask: &mut B::Buf<u8>,
    scale: &mut B::Buf<f32>,
    dims: [usize; 4],
    block: usize,
    keep: f32,
    key: MaskKey,
) -> Result<bool> {
    const OP: &str = "cuda dropblock_mask";
    crate::dropout::check_keep_prob(OP, keep)?;
    if block == 0 {
        return Err(Error::Invalid {
            op: OP,
            msg: "block size is 0".into(),
        });
    }
    let [n, c, h, w] = dims;
    check_len(dev, OP, "mask", mask, n * c * h * w)?;
    check_len(dev, OP, "scale", scale, 1)?;
    if keep == 1.0 || h < block || w < block {
        return Ok(false);
    }
    let grid = (h - block + 1) * (w - block + 1);
    if grid > DROPBLOCK_MAX_GRID {
        return Err(Error::Invalid {
            op: OP,
            msg: format!(
                "a {h} x {w} map with block {block} has a sampling grid of {grid} cells, \
                 more than the kernel's {DROPBLOCK_MAX_GRID}"
            ),
        });
    }
    let planes = n * c;
    let mut kept = dev.alloc::<u32>(planes)?;
    let p = DropBlockMaskParams {
        mask: dev.addr_mut(mask),
        kept: dev.addr_mut(&mut kept),
        key: key.into(),
        gamma: crate::dropblock::dropblock_gamma(h, w, block, keep),
        planes: count(OP, planes)?,
        h: count(OP, n * c * h * w).map(|_| h as u32)?,
        w: w as u32,
        block: block as u32,
    };
    let blocks = planes.clamp(1, DROPBLOCK_MAX_BLOCKS) as u32;
    let threads = (h * w).next_multiple_of(32).min(DROPBLOCK_THREADS as usize) as u32;
    let cfg = LaunchConfig::linear(blocks, threads, grid as u32);
    // SAFETY: mask holds planes*h*w values and kept planes; the shared tile holds the grid's
    // cells; block <= h, w keeps every square inside its plane.
    unsafe { dev.launch(DROPBLOCK_MASK, cfg, &p) }?;
    let s = DropBlockScaleParams {
        scale: dev.addr_mut(scale),
        kept: dev.addr(&kept),
        planes: p.planes,
        n: count(OP, n * c * h * w)?,
    };
    // SAFETY: kept holds `planes` values and scale one; one block reads and writes nothing else.
    unsafe {
        dev.launch(
            DROPBLOCK_SCALE,
            LaunchConfig::linear(1, DROPBLOCK_THREADS, 0),
            &s,
        )
    }?;
    Ok(true)
}

/// out = inp * scale where mask is 1, else 0, with `scale` the one value [`dropblock_mask`]
/// wrote. inp, mask: (n), scale: (1) -> out: (n), overwritten.
pub fn dropblock_apply<B: Backend>(
    dev: &B,
    out: &mut B::Buf<f32>,
    inp: &B::Buf<f32>,
    mask: &B::Buf<u8>,
    scale: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda dropblock_apply";
    let e = Elementwise::new(dev, OP, dev.len(inp));
    let (out, mask) = (e.output("out", out)?, e.input("mask", mask)?);
    check_len(dev, OP, "scale", scale, 1)?;
    let p = DropBlockApplyParams {
        out,
        inp: e.input("inp", inp)?,
        mask,
        scale: dev.addr(scale),
        n: e.count()?,
    };
    // SAFETY: out, inp and mask hold n values (checked by `e`) and scale one (checked); the
    // kernel touches indices < n and scale[0].
    unsafe { e.launch(DROPBLOCK_APPLY, &p) }
}

#[cfg(test)]
mod tests {
    use super::DROPBLOCK_MAX_GRID;

    /// The largest grid's centres (dynamic shared memory, a byte each) and the mask kernel's static
    /// shared memory, as ptxas reports it in kernels/cuda-resources.txt for each architecture,
    /// fit in the 48 KiB any launch may use.
    #[test]
    fn the_largest_sampling_grid_fits_in_shared_memory() {
        let report = include_str!("../../cuda-resources.txt");
        let static_bytes: Vec<usize> = report
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.get(1) == Some(&"dropblock_mask"))
            .map(|cols| cols[3].parse().unwrap())
            .collect();
        assert_eq!(static_bytes.len(), 2, "sm_80 and sm_90 rows");
        for smem in static_bytes {
            assert!(
                DROPBLOCK_MAX_GRID + smem <= 48 * 1024,
                "{smem} bytes of static memory"
            );
        }
    }
}
