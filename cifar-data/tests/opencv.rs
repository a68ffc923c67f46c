//! Known answers from real OpenCV: sharpening (`filter2D`), the crop's INTER_AREA enlargement and
//! the dropout mask's INTER_NEAREST upscaling. The vectors in `tests/data/*.bin` were generated
//! once by `tests/data/make_opencv_vectors.py` (its docstring gives the file layout and how to
//! rerun it) with OpenCV 5.1.0; OpenCV 3.4.18 (the seed's era) produces the same bytes
//! (`make_opencv_vectors.py --check`). Every comparison is exact: the code claims bit-identity.

use std::path::PathBuf;

use cifar_data::augment::{area_taps, crop_resize, drop_cells, Crop, Image};
use cifar_data::format::{IMAGE_BYTES, PLANE, SIDE};
use cifar_data::preprocess::{sharpen_image, sharpen_plane};
use cifar_data::Preprocess;

/// One known answer: the input and OpenCV's output, both as (channels, height, width) planes.
struct Case {
    name: String,
    channels: usize,
    in_hw: (usize, usize),
    out_hw: (usize, usize),
    /// Where the input sits in a 32x32 image (top, left): resize_area.bin only.
    at: Option<(usize, usize)>,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// Reads `tests/data/{file}`; `placed` says whether each case carries (top, left).
fn cases(file: &str, placed: bool) -> (String, Vec<Case>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    assert_eq!(take(4), b"CVKA", "{file}: magic");
    let len = usize::from(take(1)[0]);
    let version = String::from_utf8(take(len).to_vec()).unwrap();
    let count = u16::from_le_bytes(take(2).try_into().unwrap());
    let mut out = Vec::new();
    for _ in 0..count {
        let len = usize::from(take(1)[0]);
        let name = String::from_utf8(take(len).to_vec()).unwrap();
        let d: Vec<usize> = take(5).iter().map(|&b| usize::from(b)).collect();
        let (channels, in_hw, out_hw) = (d[0], (d[1], d[2]), (d[3], d[4]));
        let at = placed.then(|| {
            let p = take(2);
            (usize::from(p[0]), usize::from(p[1]))
        });
        let input = take(channels * in_hw.0 * in_hw.1).to_vec();
        let output = take(channels * out_hw.0 * out_hw.1).to_vec();
        out.push(Case {
            name,
            channels,
            in_hw,
            out_hw,
            at,
            input,
            output,
        });
    }
    assert_eq!(at, bytes.len(), "{file}: trailing bytes");
    (version, out)
}

/// Asserts `got == want`, naming the first differing (channel, y, x) and both values.
fn assert_same(got: &[u8], want: &[u8], hw: (usize, usize), what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let (c, y, x) = (i / (hw.0 * hw.1), i / hw.1 % hw.0, i % hw.1);
        panic!(
            "{what}: first difference at channel {c}, y {y}, x {x}: got {}, OpenCV {}",
            got[i], want[i]
        );
    }
}

#[test]
fn sharpen_matches_opencv_filter2d() {
    let (version, cases) = cases("sharpen.bin", false);
    let mut ties = 0;
    for case in &cases {
        let (h, w) = case.in_hw;
        assert_eq!(case.out_hw, case.in_hw, "{}", case.name);
        let mut got = vec![0u8; case.input.len()];
        for (dst, src) in got
            .chunks_exact_mut(h * w)
            .zip(case.input.chunks_exact(h * w))
        {
            sharpen_plane(dst, src, h, w).unwrap();
        }
        assert_same(
            &got,
            &case.output,
            (h, w),
            &format!("{} (OpenCV {version})", case.name),
        );
        // The 32x32 entry points give the same bytes.
        if (h, w) == (SIDE, SIDE) {
            let img: Image = case.input.as_slice().try_into().unwrap();
            assert_eq!(&sharpen_image(&img)[..], &case.output[..], "{}", case.name);
            let mut batch = [case.input.clone(), case.input.clone()].concat();
            Preprocess::Sharpen.apply_to_images(&mut batch).unwrap();
            assert_eq!(&batch[IMAGE_BYTES..], &case.output[..], "{}", case.name);
        }
        ties += exact_halves(&case.input, h, w);
    }
    // The vectors must exercise round-half-to-even, or the test could not tell it from other
    // roundings: random 32x32 images land on an exact half about once in 256 pixels.
    assert!(ties > 20, "only {ties} exact halves in the vectors");
}

/// Pixels whose unrounded result 2x - G(x) is exactly k + 1/2 (interior pixels only).
fn exact_halves(planes: &[u8], h: usize, w: usize) -> usize {
    const B: [i32; 5] = [1, 4, 6, 4, 1];
    let mut n = 0;
    for p in planes.chunks_exact(h * w) {
        for y in 2..h.saturating_sub(2) {
            for x in 2..w.saturating_sub(2) {
                let mut sum = 512 * i32::from(p[y * w + x]);
                for (i, bi) in B.iter().enumerate() {
                    for (j, bj) in B.iter().enumerate() {
                        sum -= bi * bj * i32::from(p[(y + i - 2) * w + x + j - 2]);
                    }
                }
                n += usize::from(sum.rem_euclid(256) == 128);
            }
        }
    }
    n
}

#[test]
fn sharpen_and_preprocess_edge_cases() {
    // A flat image is a fixed point; `Preprocess::None` changes nothing.
    let flat = [93u8; IMAGE_BYTES];
    assert_eq!(sharpen_image(&flat), flat);
    let mut img = [7u8; IMAGE_BYTES];
    img[5] = 200;
    let before = img;
    Preprocess::None.apply_to_image(&mut img);
    assert_eq!(img, before);
    Preprocess::Sharpen.apply_to_image(&mut img);
    assert_eq!(img, sharpen_image(&before));
    let mut bad = vec![0u8; IMAGE_BYTES + 1];
    assert!(Preprocess::Sharpen.apply_to_images(&mut bad).is_err());
    assert!(sharpen_plane(&mut [0; 4], &[0; 4], 2, 3).is_err());
    assert!(sharpen_plane(&mut [], &[], 0, 3).is_err());
    for p in [Preprocess::None, Preprocess::Sharpen] {
        assert_eq!(Preprocess::from_name(p.name()), Some(p));
    }
    assert_eq!(Preprocess::from_name("blur"), None);
}

#[test]
fn crop_resize_matches_opencv_inter_area() {
    let (version, cases) = cases("resize_area.bin", true);
    let (mut heights, mut widths) = (vec![], vec![]);
    let mut rounding_matters = 0;
    for case in &cases {
        let (h, w) = case.in_hw;
        let (top, left) = case.at.unwrap();
        assert_eq!(case.out_hw, (SIDE, SIDE), "{}", case.name);
        let crop = Crop {
            top,
            bottom: SIDE - h - top,
            left,
            right: SIDE - w - left,
        };
        for c in 0..case.channels {
            // The crop sits at (top, left) in an image whose other pixels must not matter.
            let mut src = [0u8; IMAGE_BYTES];
            for (i, v) in src.iter_mut().enumerate() {
                *v = (i * 37 % 251) as u8;
            }
            let plane = &case.input[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for ch in 0..3 {
                    let row = &mut src[ch * PLANE + (top + y) * SIDE + left..][..w];
                    row.copy_from_slice(&plane[y * w..(y + 1) * w]);
                }
            }
            let mut dst = [0u8; IMAGE_BYTES];
            crop_resize(&mut dst, &src, crop).unwrap();
            let want = &case.output[c * PLANE..(c + 1) * PLANE];
            for ch in 0..3 {
                assert_same(
                    &dst[ch * PLANE..(ch + 1) * PLANE],
                    want,
                    (SIDE, SIDE),
                    &format!("{} channel {c} (OpenCV {version})", case.name),
                );
            }
            rounding_matters += float_blend_differs(plane, (h, w), want);
        }
        heights.push(h);
        widths.push(w);
    }
    heights.sort_unstable();
    widths.sort_unstable();
    heights.dedup();
    widths.dedup();
    let all: Vec<usize> = (SIDE - 2 * 12..=SIDE).collect();
    assert_eq!(heights, all, "every crop height is covered");
    assert_eq!(widths, all, "every crop width is covered");
    // OpenCV's 11-bit fixed point differs from the rounded float blend of SPEC's formula on some
    // pixels: the vectors show it, so matching them needs the fixed-point arithmetic.
    assert!(rounding_matters > 0);
}

/// Pixels where round((1 - fy) ((1 - fx) a + fx b) + fy (...)) in f64, with OpenCV's taps but
/// unrounded weights, differs from OpenCV's output.
fn float_blend_differs(plane: &[u8], (h, w): (usize, usize), want: &[u8]) -> usize {
    let (rows, cols) = (area_taps(h), area_taps(w));
    let f = |t: &cifar_data::augment::Taps| f64::from(t.weight[1]) / 2048.0;
    let mut n = 0;
    for (y, ty) in rows.iter().enumerate() {
        for (x, tx) in cols.iter().enumerate() {
            let at = |sy: usize, sx: usize| f64::from(plane[sy * w + sx]);
            let row = |sy| (1.0 - f(tx)) * at(sy, tx.src[0]) + f(tx) * at(sy, tx.src[1]);
            let v = (1.0 - f(ty)) * row(ty.src[0]) + f(ty) * row(ty.src[1]);
            n += usize::from(v.round() as u8 != want[y * SIDE + x]);
        }
    }
    n
}

#[test]
fn area_taps_follow_the_spec_formula() {
    // An axis cropped by 0 is copied.
    for (d, t) in area_taps(SIDE).iter().enumerate() {
        assert_eq!((t.src, t.weight), ([d, (d + 1).min(SIDE - 1)], [2048, 0]));
    }
    // 16 -> 32 (scale 1/2): no output straddles two source pixels, f = (d + 1) - (s + 1) * 2 is
    // 0 for odd d and -1 (so 0) for even d: output d reads source d / 2 alone.
    for (d, t) in area_taps(16).iter().enumerate() {
        assert_eq!(t.src[0], d / 2, "output {d}");
        assert_eq!(t.weight, [2048, 0], "output {d}");
    }
    // 24 -> 32 (scale 3/4): the fraction f = (d + 1) - (s + 1) * 4/3 appears every 4 outputs.
    let t = area_taps(24);
    assert_eq!((t[2].src, t[2].weight), ([1, 2], [1365, 683]));
    assert_eq!((t[31].src, t[31].weight), ([23, 23], [2048, 0]));
}

#[test]
fn dropout_mask_upscaling_matches_opencv_inter_nearest() {
    let (version, cases) = cases("resize_nearest.bin", false);
    assert_eq!(cases.len(), 16, "every grid of 4..=7 by 4..=7 cells");
    for case in &cases {
        let (rows, cols) = case.in_hw;
        // Cells whose value is 0 are dropped: the result is the grid upscaled.
        let dropped: Vec<bool> = case.input.iter().map(|&v| v == 0).collect();
        let mut plane = [1u8; PLANE];
        drop_cells(&mut plane, &dropped, rows, cols).unwrap();
        assert_same(
            &plane,
            &case.output,
            (SIDE, SIDE),
            &format!("{} (OpenCV {version})", case.name),
        );
    }
}
