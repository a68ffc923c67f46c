//! The convolution algorithm chosen by measurement on this machine.
//!
//! With calibration on ([`set_calibration`], `trainer`'s default on the CPU; or
//! `KERNELS_CONV_CALIBRATE=1` in the environment, and `0` to force it off),
//! the first CPU call of a pass on convolutions of given sizes (batch included) runs that pass
//! by every algorithm that computes it, twice each on the call's own buffers, and keeps the
//! fastest: for the rest of the process, and in a cache file named after the CPU model and the
//! instruction set of the kernels ([`cache_file`]), which later processes read instead of
//! measuring again. The call's result is the chosen algorithm's. With calibration off (the
//! default: tests, and callers that want the same algorithms on every machine), a pass takes
//! [`Conv2dAlgo::choose`]'s fixed rule.
//!
//! Results stay independent of the thread count: the key holds the sizes only, so one machine
//! with one cache file picks the same algorithm whatever the threads. Two machines of one model
//! may pick differently where two algorithms run within the noise of each other, and their
//! results then differ by rounding.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::{Conv2dAlgo, Conv2dDims, Conv2dPass};
use crate::Result;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns calibration on or off for this process (off by default). `KERNELS_CONV_CALIBRATE` in
/// the environment overrides it: `1` on, `0` off.
pub fn set_calibration(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether CPU convolutions without a pinned algorithm are calibrated: `KERNELS_CONV_CALIBRATE`
/// (`1` or `0`) when set, else what [`set_calibration`] last said.
pub fn calibration() -> bool {
    static FROM_ENV: OnceLock<Option<bool>> = OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| match std::env::var("KERNELS_CONV_CALIBRATE") {
        Ok(v) if v == "1" => Some(true),
        Ok(v) if v == "0" => Some(false),
        _ => None,
    });
    from_env.unwrap_or_else(|| ENABLED.load(Ordering::Relaxed))
}

/// The revision of the CPU convolution kernels' speeds, in the cache file's name: raised when a
/// kernel gets faster or slower enough to change what calibration picks, so that a cache
/// written before is not read (it would keep the old picks). 2: backward-weight's sliding
/// kernel without its L1 chunks. 3: Winograd transforms with images in the vector lanes. 4:
/// F(4x4) groups of 256 tiles. 5: the transforms written out as sums, and transposed by
/// 16 x 16 blocks. 6: the forward product at each position by our own register tiles.
const KERNELS_REVISION: u32 = 6;

/// The cache file of this machine: `conv2d-r<revision>-<cpu model>-<isa>.txt`
/// ([`KERNELS_REVISION`]) in `$KERNELS_CACHE_DIR`, else `$XDG_CACHE_HOME/resnet-kernels`, else
/// `$HOME/.cache/resnet-kernels`; `None` without any of them.
pub fn cache_file() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = var("KERNELS_CACHE_DIR").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("resnet-kernels"))
    })?;
    let model: String = crate::simd::cpu_model()
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let model = model
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let isa = crate::simd::isa();
    Some(dir.join(format!("conv2d-r{KERNELS_REVISION}-{model}-{isa}.txt")))
}

type Key = (Conv2dDims, Conv2dPass);

/// The picks so far, and the file they are kept in.
struct Table {
    picks: HashMap<Key, Conv2dAlgo>,
    file: Option<PathBuf>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let file = cache_file();
        let picks = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        Mutex::new(Table { picks, file })
    })
}

const PASSES: [(Conv2dPass, &str); 3] = [
    (Conv2dPass::Forward, "forward"),
    (Conv2dPass::BackwardData, "backward_data"),
    (Conv2dPass::BackwardWeight, "backward_weight"),
];

/// One line of the cache file: `N C H W K KH KW stride pad pass algo`.
fn format_line(&(d, pass): &Key, algo: Conv2dAlgo) -> String {
    let pass = PASSES.iter().find(|p| p.0 == pass).map_or("?", |p| p.1);
    format!(
        "{} {} {} {} {} {} {} {} {} {pass} {}",
        d.n,
        d.c,
        d.h,
        d.w,
        d.k,
        d.kh,
        d.kw,
        d.stride,
        d.pad,
        algo.name()
    )
}

/// The entry of a cache line; `None` for a line that is not one (a damaged or foreign file is
/// measured again, never trusted).
fn parse_line(line: &str) -> Option<(Key, Conv2dAlgo)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [n, c, h, w, k, kh, kw, stride, pad] = std::array::from_fn(|i| f.get(i)?.parse().ok());
    let (n, c, h, w, k, kh, kw, stride, pad) = (n?, c?, h?, w?, k?, kh?, kw?, stride?, pad?);
    let pass = PASSES.iter().find(|p| f.get(9) == Some(&p.1))?.0;
    let algo = Conv2dAlgo::ALL
        .into_iter()
        .find(|a| f.get(10) == Some(&a.name()))?;
    let d = Conv2dDims::new(
        "calibrate",
        &[n, c, h, w],
        &[k, c, kh, kw],
        super::Conv2dGeom { stride, pad },
    )
    .ok()?;
    (f.len() == 11 && algo.computes(&d)).then_some(((d, pass), algo))
}

/// Runs `pass` of `d` into `out` by the calibrated algorithm (or by [`Conv2dAlgo::choose`] with
/// calibration off): `run(algo, out)` computes the pass by `algo`. Backward-weight accumulates
/// into `out`, so each trial starts from a copy of it.
pub(super) fn run_calibrated(
    d: &Conv2dDims,
    pass: Conv2dPass,
    out: &mut [f32],
    mut run: impl FnMut(Conv2dAlgo, &mut [f32]) -> Result<()>,
) -> Result<()> {
    if !calibration() {
        return run(Conv2dAlgo::choose(d, pass), out);
    }
    let key = (*d, pass);
    let known = table().lock().map_or(None, |t| t.picks.get(&key).copied());
    if let Some(algo) = known {
        return run(algo, out);
    }
    let accumulates = pass == Conv2dPass::BackwardWeight;
    let start = accumulates.then(|| out.to_vec());
    let mut best: Option<(f64, Conv2dAlgo)> = None;
    let mut last = None;
    for algo in Conv2dAlgo::ALL.into_iter().filter(|a| a.computes(d)) {
        for _ in 0..2 {
            if let Some(start) = &start {
                out.copy_from_slice(start);
            }
            let t = Instant::now();
            run(algo, out)?;
            let secs = t.elapsed().as_secs_f64();
            if best.is_none_or(|(b, _)| secs < b) {
                best = Some((secs, algo));
            }
            last = Some(algo);
        }
    }
    let Some((_, algo)) = best else {
        return run(Conv2dAlgo::choose(d, pass), out);
    };
    if last != Some(algo) || accumulates {
        if let Some(start) = &start {
            out.copy_from_slice(start);
        }
        run(algo, out)?;
    }
    if let Ok(mut t) = table().lock() {
        t.picks.insert(key, algo);
        if let Some(file) = &t.file {
            // A cache: when it cannot be written, the next process measures again.
            let _ = std::fs::create_dir_all(file.parent().unwrap_or(file))
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(file)
                })
                .and_then(|mut f| writeln!(f, "{}", format_line(&key, algo)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv2d::Conv2dGeom;

    #[test]
    fn cache_lines_round_trip_and_bad_ones_are_skipped() {
        let d = Conv2dDims::new(
            "t",
            &[64, 32, 16, 16],
            &[64, 32, 3, 3],
            Conv2dGeom::SAME_3X3,
        )
        .unwrap();
        let key = (d, Conv2dPass::BackwardWeight);
        let line = format_line(&key, Conv2dAlgo::Sliding);
        assert_eq!(line, "64 32 16 16 64 3 3 1 1 backward_weight sliding");
        assert_eq!(parse_line(&line), Some((key, Conv2dAlgo::Sliding)));
        for bad in [
            "",
            "64 32 16 16 64 3 3 1 1 backward_weight",
            "64 32 16 16 64 3 3 1 1 sideways sliding",
            "64 32 16 16 64 3 3 1 1 forward fastest",
            "64 32 16 16 64 3 3 2 1 forward winograd4",
            "64 32 16 16 64 3 3 1 1 forward sliding extra",
            "0 32 16 16 64 3 3 1 1 forward direct",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }
}
