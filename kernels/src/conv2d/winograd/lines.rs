//! The transforms' small matrices written out as sums, one vector of [`LANES`] images at a time:
//! B^T (input), A^T (output) and A (gradient tile) of F(2x2) and F(4x4), and the 2-D transform
//! L src L^T built from each. Written out, F(4x4)'s input line takes 22 vector additions and
//! multiplications where a loop over B^T's 22 nonzero entries took 44 (its rows share sums such as
//! d1 + d2); `tests` checks every line against its matrix in `matrices`.

use super::matrices::Tile;
use super::transforms::{Lanes, LANES};

/// a + b, lane by lane.
#[inline(always)]
fn add(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + b[l])
}

/// a - b, lane by lane.
#[inline(always)]
fn sub(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] - b[l])
}

/// a + c b, lane by lane (two roundings: no FMA needed).
#[inline(always)]
fn add_scaled(a: &Lanes, c: f32, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + c * b[l])
}

/// F(2x2)'s B^T d: rows [1 0 -1 0], [0 1 1 0], [0 -1 1 0], [0 1 0 -1].
#[inline(always)]
fn bt2([d0, d1, d2, d3]: [&Lanes; 4]) -> [Lanes; 4] {
    [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
}

/// F(2x2)'s A^T m: rows [1 1 1 0], [0 1 -1 -1].
#[inline(always)]
fn at2([m0, m1, m2, m3]: [&Lanes; 4]) -> [Lanes; 2] {
    [add(&add(m0, m1), m2), sub(&sub(m1, m2), m3)]
}

/// F(2x2)'s A y: rows [1 0], [1 1], [1 -1], [0 -1].
#[inline(always)]
fn a2([y0, y1]: [&Lanes; 2]) -> [Lanes; 4] {
    [
        *y0,
        add(y0, y1),
        sub(y0, y1),
        std::array::from_fn(|l| -y1[l]),
    ]
}

/// F(4x4)'s B^T d: rows [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0], [0 -2 -1 2 1 0],
/// [0 2 -1 -2 1 0], [0 4 0 -5 0 1].
#[inline(always)]
fn bt4([d0, d1, d2, d3, d4, d5]: [&Lanes; 6]) -> [Lanes; 6] {
    let (s12, d12) = (add(d1, d2), sub(d1, d2));
    let (s34, d43) = (add(d3, d4), sub(d4, d3));
    let (d42, d31) = (sub(d4, d2), sub(d3, d1));
    [
        add_scaled(&add_scaled(d4, -5.0, d2), 4.0, d0),
        add_scaled(&s34, -4.0, &s12),
        add_scaled(&d43, 4.0, &d12),
        add_scaled(&d42, 2.0, &d31),
        add_scaled(&d42, -2.0, &d31),
        add_scaled(&add_scaled(d5, -5.0, d3), 4.0, d1),
    ]
}

/// F(4x4)'s A^T m: rows [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0], [0 1 -1 8 -8 1].
#[inline(always)]
fn at4([m0, m1, m2, m3, m4, m5]: [&Lanes; 6]) -> [Lanes; 4] {
    let (s12, d12) = (add(m1, m2), sub(m1, m2));
    let (s34, d34) = (add(m3, m4), sub(m3, m4));
    [
        add(&add(m0, &s12), &s34),
        add_scaled(&d12, 2.0, &d34),
        add_scaled(&s12, 4.0, &s34),
        add(&add_scaled(&d12, 8.0, &d34), m5),
    ]
}

/// F(4x4)'s A y: rows [1 0 0 0], [1 1 1 1], [1 -1 1 -1], [1 2 4 8], [1 -2 4 -8], [0 0 0 1].
#[inline(always)]
fn a4([y0, y1, y2, y3]: [&Lanes; 4]) -> [Lanes; 6] {
    let (e, o) = (add(y0, y2), add(y1, y3));
    let e4 = add_scaled(y0, 4.0, y2);
    let o4: Lanes = std::array::from_fn(|l| 2.0 * y1[l] + 8.0 * y3[l]);
    [
        *y0,
        add(&e, &o),
        sub(&e, &o),
        add(&e4, &o4),
        sub(&e4, &o4),
        *y3,
    ]
}

/// A small matrix L (N, K) applied to K vectors, as [`sandwich`] takes it.
///
/// A trait, not a function passed as `impl Fn`: the function was then called through its
/// `Fn::call` shim, and a closure wrapping it was left out of line too, both compiled without
/// the caller's target features (SSE, 4 lanes); a trait's method is a direct call, inlined.
trait Line<const K: usize, const N: usize> {
    fn apply(v: [&Lanes; K]) -> [Lanes; N];
}

/// Implements [`Line`] for a unit type by one of the functions above.
macro_rules! line {
    ($name:ident, $f:ident, $k:literal, $n:literal) => {
        struct $name;
        impl Line<$k, $n> for $name {
            #[inline(always)]
            fn apply(v: [&Lanes; $k]) -> [Lanes; $n] {
                $f(v)
            }
        }
    };
}

line!(Bt2, bt2, 4, 4);
line!(At2, at2, 4, 2);
line!(A2, a2, 2, 4);
line!(Bt4, bt4, 6, 6);
line!(At4, at4, 6, 4);
line!(A4, a4, 4, 6);

/// out (N, N) = L src L^T for the (N, K) matrix L of `L`: each column of src through L
/// (t = L src, (N, K)), then each row of t (out[i] = L t[i]).
#[inline(always)]
fn sandwich<'a, L: Line<K, N>, const K: usize, const N: usize>(
    src: impl Fn(usize, usize) -> &'a Lanes,
    out: &mut [Lanes],
) {
    let mut t = [[[0.0f32; LANES]; K]; N];
    for b in 0..K {
        let col = L::apply(std::array::from_fn(|a| src(a, b)));
        for (t_i, v) in t.iter_mut().zip(col) {
            t_i[b] = v;
        }
    }
    for (t_i, out_i) in t.iter().zip(out.chunks_exact_mut(N)) {
        out_i.copy_from_slice(&L::apply(std::array::from_fn(|b| &t_i[b])));
    }
}

/// V = B^T d B of the (alpha, alpha) patch src(a, b) into out (alpha^2).
#[inline(always)]
pub(super) fn input<'a>(tile: &Tile, src: impl Fn(usize, usize) -> &'a Lanes, out: &mut [Lanes]) {
    match tile.m {
        2 => sandwich::<Bt2, 4, 4>(src, out),
        4 => sandwich::<Bt4, 6, 6>(src, out),
        m => unreachable!("no Winograd tile F({m}x{m})"),
    }
}

/// y = A^T M A of the (alpha, alpha) positions src(a, b) into out (m^2).
#[inline(always)]
pub(super) fn output<'a>(tile: &Tile, src: impl Fn(usize, usize) -> &'a Lanes, out: &mut [Lanes]) {
    match tile.m {
        2 => sandwich::<At2, 4, 2>(src, out),
        4 => sandwich::<At4, 6, 4>(src, out),
        m => unreachable!("no Winograd tile F({m}x{m})"),
    }
}

/// Z = A dy A^T of the (m, m) gradient tile src(a, b) into out (alpha^2).
#[inline(always)]
pub(super) fn grad<'a>(tile: &Tile, src: impl Fn(usize, usize) -> &'a Lanes, out: &mut [Lanes]) {
    match tile.m {
        2 => sandwich::<A2, 2, 4>(src, out),
        4 => sandwich::<A4, 4, 6>(src, out),
        m => unreachable!("no Winograd tile F({m}x{m})"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{F2, F4};
    use super::*;

    /// The (rows, cols) matrix `line` applies, read off its outputs for the unit vectors (lane 0;
    /// the other lanes hold the unit vector scaled by the lane's number).
    fn matrix_of<const K: usize, const N: usize>(
        line: impl Fn([&Lanes; K]) -> [Lanes; N],
    ) -> Vec<Vec<f32>> {
        let mut cols = Vec::new();
        for a in 0..K {
            let e: [Lanes; K] = std::array::from_fn(|i| {
                std::array::from_fn(|l| if i == a { l as f32 + 1.0 } else { 0.0 })
            });
            let out = line(std::array::from_fn(|i| &e[i]));
            for (i, o) in out.iter().enumerate() {
                for (l, &v) in o.iter().enumerate() {
                    assert_eq!(v, out[i][0] * (l as f32 + 1.0), "lane {l} of row {i}");
                }
            }
            cols.push(out.map(|o| o[0]));
        }
        (0..N)
            .map(|i| cols.iter().map(|c| c[i]).collect())
            .collect()
    }

    #[test]
    fn each_line_applies_its_matrix() {
        for (tile, name) in [(&F2, "F(2x2)"), (&F4, "F(4x4)")] {
            let (m, al) = (tile.m, tile.alpha);
            let bt: Vec<Vec<f32>> = (0..al).map(|i| tile.bt_row(i).to_vec()).collect();
            let at: Vec<Vec<f32>> = (0..m).map(|i| tile.at_row(i).to_vec()).collect();
            let a: Vec<Vec<f32>> = (0..al).map(|i| tile.at_col(i).collect()).collect();
            let (got_bt, got_at, got_a) = match m {
                2 => (matrix_of(bt2), matrix_of(at2), matrix_of(a2)),
                _ => (matrix_of(bt4), matrix_of(at4), matrix_of(a4)),
            };
            assert_eq!(got_bt, bt, "{name}: B^T");
            assert_eq!(got_at, at, "{name}: A^T");
            assert_eq!(got_a, a, "{name}: A");
        }
    }
}
