//! Philox4x32-10, the counter-based generator of Salmon et al. (SC'11) that cuRAND and JAX use.
//!
//! A random value is a pure function of (seed, step, layer, element), so a mask does not depend on
//! how the work is split between threads, and a CUDA kernel computing the same function draws the
//! very same mask. The CUDA twin of [`philox4x32_10`] is `philox.cuh` beside this file (the mask
//! kernels include it; `cuda.rs` holds its C twin of [`MaskKey`]); both follow the reference
//! implementation of Random123.

pub mod cuda;

/// Identifies one random stream: the run's seed, the optimizer step and the consumer (a layer).
///
/// Two consumers in the same step must use different `layer` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MaskKey {
    pub seed: u64,
    pub step: u64,
    pub layer: u32,
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten rounds of Philox4x32 on `ctr` under `key`.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

impl MaskKey {
    /// 32 random bits for element `elem` of this stream.
    ///
    /// One Philox block yields four words, so elements 4i..4i+3 share the counter
    /// (i, layer, step low, step high) and take its words in order.
    #[inline]
    pub fn bits(&self, elem: u64) -> u32 {
        self.block(elem / 4)[(elem % 4) as usize]
    }

    /// The four words of Philox block `block`: the bits of elements 4*block .. 4*block + 3.
    #[inline]
    pub fn block(&self, block: u64) -> [u32; 4] {
        debug_assert!(block <= u32::MAX as u64, "philox stream exhausted");
        let ctr = [
            block as u32,
            self.layer,
            self.step as u32,
            (self.step >> 32) as u32,
        ];
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        philox4x32_10(ctr, key)
    }

    /// Calls `f(i, self.uniform(first + i))` for i in 0..count, in order, computing each Philox
    /// block once for its four elements instead of once per element.
    #[inline]
    pub fn for_each_uniform(&self, first: u64, count: usize, mut f: impl FnMut(usize, f32)) {
        let end = first + count as u64;
        let mut e = first;
        while e < end {
            let words = self.block(e / 4);
            let lane0 = (e % 4) as usize;
            let take = (4 - lane0).min((end - e) as usize);
            for (l, &w) in words[lane0..lane0 + take].iter().enumerate() {
                f((e - first) as usize + l, to_uniform(w));
            }
            e += take as u64;
        }
    }

    /// A uniform value in [0, 1) for element `elem`: the top 24 bits scaled by 2^-24, exact in f32.
    #[inline]
    pub fn uniform(&self, elem: u64) -> f32 {
        to_uniform(self.bits(elem))
    }
}

/// The top 24 bits of `bits` scaled by 2^-24: a value in [0, 1), exact in f32.
#[inline(always)]
fn to_uniform(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123's `kat_vectors` for philox4x32_10.
    #[test]
    fn matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn for_each_uniform_matches_uniform_at_every_alignment() {
        let key = MaskKey {
            seed: 7,
            step: 1 << 33,
            layer: 2,
        };
        for first in 0..6u64 {
            for count in 0..11usize {
                let mut got = Vec::new();
                key.for_each_uniform(first, count, |i, u| got.push((i, u)));
                let want: Vec<(usize, f32)> = (0..count)
                    .map(|i| (i, key.uniform(first + i as u64)))
                    .collect();
                assert_eq!(got, want, "first {first}, count {count}");
            }
        }
    }

    #[test]
    fn uniform_is_in_range_and_roughly_flat() {
        let key = MaskKey {
            seed: 42,
            step: 3,
            layer: 1,
        };
        let n = 100_000;
        let mut buckets = [0usize; 10];
        for e in 0..n {
            let u = key.uniform(e);
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((b as f64 - 10_000.0).abs() < 500.0, "{buckets:?}");
        }
    }

    #[test]
    fn streams_differ_by_every_key_field() {
        let k = MaskKey {
            seed: 1,
            step: 2,
            layer: 3,
        };
        let others = [
            MaskKey { seed: 9, ..k },
            MaskKey { step: 9, ..k },
            MaskKey { layer: 9, ..k },
        ];
        for o in others {
            assert_ne!(
                (0..8).map(|e| k.bits(e)).collect::<Vec<_>>(),
                (0..8).map(|e| o.bits(e)).collect::<Vec<_>>()
            );
        }
    }
}
