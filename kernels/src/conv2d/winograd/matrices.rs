//! The Lavin-Gray matrices of Winograd F(m x m, 3x3) for m = 2 and m = 4.
//!
//! With alpha = m + 2, an (alpha, alpha) input patch d and a 3x3 kernel g give the (m, m) output
//! tile y = A^T [ (G g G^T) . (B^T d B) ] A, `.` the elementwise product. B^T is (alpha, alpha),
//! G (alpha, 3) and A^T (m, alpha). F(2x2) interpolates at 0, 1, -1 and infinity; F(4x4) at 0, 1,
//! -1, 2, -2 and infinity: larger coefficients (up to 8 in A^T, 5 in B^T) and thirds, sixths and
//! twenty-fourths in G, so it rounds worse than F(2x2) (see the tests' tolerance).

/// One Winograd variant F(m x m, 3x3): its tile sides and matrices, row-major.
#[derive(Debug)]
pub(in crate::conv2d) struct Tile {
    /// Output tile side m.
    pub m: usize,
    /// Input tile side alpha = m + 2.
    pub alpha: usize,
    /// B^T: (alpha, alpha), the input transform V = B^T d B. (`lines` writes B^T and A^T out as
    /// sums; these entries are what the tests check those sums against.)
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests of `lines`"))]
    pub bt: &'static [f32],
    /// G: (alpha, 3), the weight transform U = G g G^T.
    pub g: &'static [f32],
    /// A^T: (m, alpha), the output transform y = A^T M A (and Z = A dy A^T for a gradient tile).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests of `lines`"))]
    pub at: &'static [f32],
    /// The least number of tiles (GEMM columns) a group of images aims for; see
    /// `winograd::Plan::group`. Measured on Zen 4 (`conv_layers -- small 250 2 winograd4`,
    /// alternated): F(4x4) with 256 ran small's 64-channel 16x16 layers in 22 to 26 ms where 1024
    /// took 34 to 46 and 512 23 to 46, the other layers alike within the noise (so also the
    /// seed's); F(2x2) with 512 was no faster than with 2048.
    pub group_tiles: usize,
}

impl Tile {
    /// Row r of B^T.
    #[cfg(test)]
    pub fn bt_row(&self, r: usize) -> &'static [f32] {
        &self.bt[r * self.alpha..][..self.alpha]
    }

    /// Row r of A^T.
    #[cfg(test)]
    pub fn at_row(&self, r: usize) -> &'static [f32] {
        &self.at[r * self.alpha..][..self.alpha]
    }

    /// Row r of G.
    pub fn g_row(&self, r: usize) -> &'static [f32] {
        &self.g[r * 3..][..3]
    }

    /// Column i of A^T (row i of A): its m entries.
    #[cfg(test)]
    pub fn at_col(&self, i: usize) -> impl Iterator<Item = f32> + '_ {
        (0..self.m).map(move |r| self.at[r * self.alpha + i])
    }

    /// Positions of the transformed tile: alpha^2.
    pub fn positions(&self) -> usize {
        self.alpha * self.alpha
    }
}

/// F(2x2, 3x3): 16 multiplications per 2x2 output tile and channel pair (4 per output, 2.25x
/// fewer than direct).
///
/// ```text
/// B^T = [1  0 -1  0]   G = [  1    0    0 ]   A^T = [1  1  1  0]
///       [0  1  1  0]       [ 1/2  1/2  1/2]         [0  1 -1 -1]
///       [0 -1  1  0]       [ 1/2 -1/2  1/2]
///       [0  1  0 -1]       [  0    0    1 ]
/// ```
pub(in crate::conv2d) static F2: Tile = Tile {
    m: 2,
    alpha: 4,
    #[rustfmt::skip]
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
    group_tiles: 2048,
};

/// F(4x4, 3x3): 36 multiplications per 4x4 output tile and channel pair (2.25 per output, 4x
/// fewer than direct, 1.78x fewer than F(2x2)).
///
/// ```text
/// B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0 ]   A^T = [1  1  1  1  1  0]
///       [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6 ]         [0  1 -1  2 -2  0]
///       [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6 ]         [0  1  1  4  4  0]
///       [0 -2 -1  2  1  0]       [1/24  1/12   1/6 ]         [0  1 -1  8 -8  1]
///       [0  2 -1 -2  1  0]       [1/24 -1/12   1/6 ]
///       [0  4  0 -5  0  1]       [  0     0     1  ]
/// ```
pub(in crate::conv2d) static F4: Tile = Tile {
    m: 4,
    alpha: 6,
    #[rustfmt::skip]
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
    group_tiles: 256,
};
