//! Line charts rendered to PNG: a title, axes with numeric tick labels, axis labels, several named
//! series in distinct colours and a legend. The run directory's loss and accuracy plots are drawn
//! with this from `metrics.csv` and `steps.csv`.
//!
//! Text uses the built-in 8x8 bitmap font ([`crate::draw`]), so a chart renders the same on every
//! machine, fonts installed or not, and the PNG bytes are a pure function of the data.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::draw::{encode_png, fit_text, text_width, Canvas, BLACK, GLYPH, WHITE};
use crate::error::{Error, Result};

/// Default chart size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);
/// Smallest chart [`Chart::render`] accepts: below this the labels would overlap the plot.
pub const MIN_SIZE: (u32, u32) = (240, 160);

/// Series colours, in order (the "tab10" palette): distinct, and readable on white.
const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const FRAME: Rgb<u8> = Rgb([150, 150, 150]);
/// About this many ticks per axis.
const TARGET_TICKS: f64 = 6.0;
/// Points are marked with a small square when a series has at most this many.
const MAX_MARKED_POINTS: usize = 40;

/// One named line: (x, y) points in the order they are joined. Non-finite points (a diverged
/// loss) are left out and break the line there.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A line chart: what [`Chart::render`] draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One axis: the data range widened to whole ticks, and the tick spacing.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// An axis covering `min..=max` with "nice" ticks (1, 2 or 5 times a power of ten). A single
    /// value gets a range around it, so constant series and single points still draw.
    fn new(min: f64, max: f64) -> Self {
        let (min, max) = if max - min <= f64::EPSILON * max.abs().max(1.0) {
            let pad = 0.5 * min.abs().max(1.0);
            (min - pad, max + pad)
        } else {
            (min, max)
        };
        let raw = (max - min) / TARGET_TICKS;
        let magnitude = 10f64.powf(raw.log10().floor());
        let nice = match raw / magnitude {
            r if r <= 1.0 => 1.0,
            r if r <= 2.0 => 2.0,
            r if r <= 5.0 => 5.0,
            _ => 10.0,
        };
        let step = nice * magnitude;
        Axis {
            lo: (min / step).floor() * step,
            hi: (max / step).ceil() * step,
            step,
        }
    }

    /// The tick values, computed from integers so they do not drift.
    fn ticks(&self) -> Vec<f64> {
        let first = (self.lo / self.step).round() as i64;
        let last = (self.hi / self.step).round() as i64;
        (first..=last).map(|k| k as f64 * self.step).collect()
    }

    /// A tick's label with as many decimals as the spacing needs; scientific notation for very
    /// small spacings or very large values (learning rates, step counts in the millions).
    fn label(&self, value: f64) -> String {
        let value = if value.abs() < self.step * 1e-6 {
            0.0
        } else {
            value
        };
        let largest = self.lo.abs().max(self.hi.abs());
        if self.step < 1e-3 || largest >= 1e7 {
            return format!("{value:.1e}");
        }
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        format!("{value:.decimals$}")
    }

    /// Where `value` falls between the pixels `from` (at `lo`) and `to` (at `hi`).
    fn pixel(&self, value: f64, from: i64, to: i64) -> i64 {
        let t = (value - self.lo) / (self.hi - self.lo);
        from + (t * (to - from) as f64).round() as i64
    }
}

/// The plot area inside the margins, in pixels.
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Chart {
    /// Draws the chart on a `width` x `height` white image.
    ///
    /// Errors: no series, a series without any point, no finite point at all, or a size below
    /// [`MIN_SIZE`].
    pub fn render(&self, width: u32, height: u32) -> Result<RgbImage> {
        let (x_axis, y_axis) = self.axes(width, height)?;
        let mut canvas = Canvas::new(width, height, WHITE);

        let y_labels: Vec<String> = y_axis.ticks().iter().map(|&v| y_axis.label(v)).collect();
        let widest = y_labels.iter().map(|l| text_width(l, 1)).max().unwrap_or(0);
        let frame = Frame {
            left: (GLYPH + 8 + widest + 8) as i64,
            top: 36,
            right: width as i64 - 20,
            bottom: height as i64 - (8 + GLYPH + 8 + GLYPH + 8) as i64,
        };

        self.draw_title(&mut canvas, width);
        draw_axes(&mut canvas, frame, x_axis, y_axis, &y_labels);
        self.draw_axis_labels(&mut canvas, frame, height);
        for (i, series) in self.series.iter().enumerate() {
            draw_series(
                &mut canvas,
                frame,
                x_axis,
                y_axis,
                series,
                PALETTE[i % PALETTE.len()],
            );
        }
        self.draw_legend(&mut canvas, frame, x_axis, y_axis);
        Ok(canvas.img)
    }

    /// The chart as PNG bytes (see [`Chart::render`]).
    pub fn to_png(&self, width: u32, height: u32) -> Result<Vec<u8>> {
        encode_png(&self.render(width, height)?)
    }

    /// Renders the chart at [`DEFAULT_SIZE`] and writes it to `path` as PNG.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_png(DEFAULT_SIZE.0, DEFAULT_SIZE.1)?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    /// Checks the chart and the size, and fits both axes to the finite points.
    fn axes(&self, width: u32, height: u32) -> Result<(Axis, Axis)> {
        let op = "plot";
        if width < MIN_SIZE.0 || height < MIN_SIZE.1 {
            return Err(Error::invalid(
                op,
                format!(
                    "chart {:?}: size {width}x{height} is below the minimum {}x{}",
                    self.title, MIN_SIZE.0, MIN_SIZE.1
                ),
            ));
        }
        if self.series.is_empty() {
            return Err(Error::invalid(
                op,
                format!("chart {:?} has no series", self.title),
            ));
        }
        if let Some(s) = self.series.iter().find(|s| s.points.is_empty()) {
            return Err(Error::invalid(
                op,
                format!("chart {:?}: series {:?} has no points", self.title, s.name),
            ));
        }
        let finite = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in finite {
            (x_min, x_max) = (x_min.min(x), x_max.max(x));
            (y_min, y_max) = (y_min.min(y), y_max.max(y));
        }
        if x_min > x_max {
            return Err(Error::invalid(
                op,
                format!("chart {:?}: no series has a finite point", self.title),
            ));
        }
        Ok((Axis::new(x_min, x_max), Axis::new(y_min, y_max)))
    }

    fn draw_title(&self, canvas: &mut Canvas, width: u32) {
        // Twice the font size when it fits, else the plain size, cut to the width.
        let scale = if text_width(&self.title, 2) + 16 <= width {
            2
        } else {
            1
        };
        let title = fit_text(&self.title, ((width - 16) / (GLYPH * scale)) as usize);
        let x = (width as i64 - text_width(&title, scale) as i64) / 2;
        canvas.text(x, 10, &title, BLACK, scale);
    }

    fn draw_axis_labels(&self, canvas: &mut Canvas, frame: Frame, height: u32) {
        let plot_w = (frame.right - frame.left).max(0) as u32;
        let x_label = fit_text(&self.x_label, (plot_w / GLYPH) as usize);
        let x = frame.left + (plot_w as i64 - text_width(&x_label, 1) as i64) / 2;
        canvas.text(x, height as i64 - 8 - GLYPH as i64, &x_label, BLACK, 1);

        let plot_h = (frame.bottom - frame.top).max(0) as u32;
        let y_label = fit_text(&self.y_label, (plot_h / GLYPH) as usize);
        let y = frame.bottom - (plot_h as i64 - text_width(&y_label, 1) as i64) / 2;
        canvas.text_vertical(4, y, &y_label, BLACK);
    }

    /// A boxed list of colour swatches and series names, in the plot corner that hides the
    /// fewest data points.
    fn draw_legend(&self, canvas: &mut Canvas, frame: Frame, x_axis: Axis, y_axis: Axis) {
        let plot_w = (frame.right - frame.left).max(0) as u32;
        let max_chars = (plot_w.saturating_sub(40) / GLYPH / 2).max(4) as usize;
        let names: Vec<String> = self
            .series
            .iter()
            .map(|s| fit_text(&s.name, max_chars))
            .collect();
        let widest = names.iter().map(|n| text_width(n, 1)).max().unwrap_or(0);
        let (w, h) = (8 + 16 + 6 + widest + 8, 6 + names.len() as u32 * 14);
        let corners = [
            (frame.right - 8 - w as i64, frame.top + 8),
            (frame.left + 8, frame.top + 8),
            (frame.right - 8 - w as i64, frame.bottom - 8 - h as i64),
            (frame.left + 8, frame.bottom - 8 - h as i64),
        ];
        let hidden = |&(x, y): &(i64, i64)| {
            self.series
                .iter()
                .flat_map(|s| sample_pixels(frame, x_axis, y_axis, s))
                .filter(|&(px, py)| px >= x && px < x + w as i64 && py >= y && py < y + h as i64)
                .count()
        };
        // Ties keep the earlier corner: top right is the default.
        let (x, y) = corners
            .iter()
            .copied()
            .min_by_key(|c| hidden(c))
            .unwrap_or(corners[0]);
        canvas.fill_rect(x, y, w, h, WHITE);
        canvas.stroke_rect(x, y, w, h, FRAME);
        for (i, name) in names.iter().enumerate() {
            let row = y + 4 + i as i64 * 14;
            let color = PALETTE[i % PALETTE.len()];
            canvas.fill_rect(x + 8, row + 2, 16, 4, color);
            canvas.text(x + 8 + 16 + 6, row, name, BLACK, 1);
        }
    }
}

/// Grid lines, the frame, and the tick labels of both axes.
fn draw_axes(canvas: &mut Canvas, frame: Frame, x_axis: Axis, y_axis: Axis, y_labels: &[String]) {
    let Frame {
        left,
        top,
        right,
        bottom,
    } = frame;
    for (v, label) in y_axis.ticks().into_iter().zip(y_labels) {
        let y = y_axis.pixel(v, bottom, top);
        canvas.line(left, y, right, y, GRID, 1);
        canvas.line(left - 4, y, left, y, BLACK, 1);
        let x = left - 8 - text_width(label, 1) as i64;
        canvas.text(x, y - GLYPH as i64 / 2, label, BLACK, 1);
    }
    let x_labels: Vec<(f64, String)> = x_axis
        .ticks()
        .into_iter()
        .map(|v| (v, x_axis.label(v)))
        .collect();
    // Show every k-th x label so that neighbours never touch.
    let widest = x_labels
        .iter()
        .map(|(_, l)| text_width(l, 1))
        .max()
        .unwrap_or(0) as i64;
    let spacing = (right - left) / (x_labels.len().max(2) as i64 - 1);
    let every = ((widest + 8) / spacing.max(1) + 1) as usize;
    for (i, (v, label)) in x_labels.iter().enumerate() {
        let x = x_axis.pixel(*v, left, right);
        canvas.line(x, top, x, bottom, GRID, 1);
        canvas.line(x, bottom, x, bottom + 4, BLACK, 1);
        if i % every == 0 {
            canvas.text(
                x - text_width(label, 1) as i64 / 2,
                bottom + 8,
                label,
                BLACK,
                1,
            );
        }
    }
    canvas.line(left, top, left, bottom, BLACK, 1);
    canvas.line(left, bottom, right, bottom, BLACK, 1);
    canvas.line(right, top, right, bottom, FRAME, 1);
    canvas.line(left, top, right, top, FRAME, 1);
}

/// The series as a 2-pixel line through its finite points, with a marker on each point when there
/// are few (so a single point shows).
fn draw_series(
    canvas: &mut Canvas,
    frame: Frame,
    x_axis: Axis,
    y_axis: Axis,
    series: &Series,
    color: Rgb<u8>,
) {
    let mark = series.points.len() <= MAX_MARKED_POINTS;
    let mut previous: Option<(i64, i64)> = None;
    for &(x, y) in &series.points {
        if !(x.is_finite() && y.is_finite()) {
            previous = None;
            continue;
        }
        let p = (
            x_axis.pixel(x, frame.left, frame.right),
            y_axis.pixel(y, frame.bottom, frame.top),
        );
        if let Some(q) = previous {
            canvas.line(q.0, q.1, p.0, p.1, color, 2);
        }
        if mark {
            canvas.fill_rect(p.0 - 2, p.1 - 2, 5, 5, color);
        }
        previous = Some(p);
    }
}

/// Pixels along the series (its points and 16 samples on each segment), to judge what a legend
/// box would cover.
fn sample_pixels(frame: Frame, x_axis: Axis, y_axis: Axis, series: &Series) -> Vec<(i64, i64)> {
    let pixel = |(x, y): (f64, f64)| {
        (
            x_axis.pixel(x, frame.left, frame.right),
            y_axis.pixel(y, frame.bottom, frame.top),
        )
    };
    let finite: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut out: Vec<(i64, i64)> = finite.iter().map(|&p| pixel(p)).collect();
    for pair in finite.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        for k in 1..16 {
            let t = k as f64 / 16.0;
            out.push(pixel((x0 + t * (x1 - x0), y0 + t * (y1 - y0))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "Loss per epoch".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series,
        }
    }

    fn falling(name: &str, n: usize, scale: f64) -> Series {
        Series::new(
            name,
            (0..n)
                .map(|i| (i as f64 + 1.0, scale * (4.6 - 0.05 * i as f64)))
                .collect(),
        )
    }

    fn count_color(img: &RgbImage, color: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == color).count()
    }

    #[test]
    fn renders_a_png_of_the_requested_size_with_every_series_colour() {
        let c = chart(vec![
            falling("train", 30, 1.0),
            falling("test", 30, 1.1),
            falling("minibatch", 30, 0.9),
        ]);
        let img = c.render(640, 400).unwrap();
        assert_eq!(img.dimensions(), (640, 400));
        for color in &PALETTE[..3] {
            assert!(
                count_color(&img, *color) > 200,
                "colour {color:?} barely drawn"
            );
        }
        assert!(count_color(&img, BLACK) > 500, "text and axes missing");
        assert_eq!(
            count_color(&img, PALETTE[3]),
            0,
            "a fourth colour with three series"
        );
        let png = c.to_png(640, 400).unwrap();
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded, img);
    }

    #[test]
    fn same_data_gives_the_same_bytes() {
        let c = chart(vec![falling("train", 75, 1.0), falling("test", 75, 1.2)]);
        assert_eq!(c.to_png(800, 500).unwrap(), c.to_png(800, 500).unwrap());
        let other = chart(vec![falling("train", 75, 1.0), falling("test", 75, 1.3)]);
        assert_ne!(c.to_png(800, 500).unwrap(), other.to_png(800, 500).unwrap());
    }

    #[test]
    fn a_single_point_and_a_constant_series_draw() {
        let one = chart(vec![Series::new("test", vec![(1.0, 2.5)])]);
        let img = one.render(400, 300).unwrap();
        assert!(
            count_color(&img, PALETTE[0]) >= 25,
            "the lone point has no marker"
        );

        let flat = chart(vec![Series::new(
            "keep",
            (0..20).map(|i| (i as f64, 1.0)).collect(),
        )]);
        let img = flat.render(400, 300).unwrap();
        assert!(count_color(&img, PALETTE[0]) > 100);
    }

    #[test]
    fn non_finite_points_are_skipped_not_drawn() {
        let mut s = falling("train", 10, 1.0);
        s.points[4].1 = f64::NAN;
        s.points[7].1 = f64::INFINITY;
        let img = chart(vec![s]).render(400, 300).unwrap();
        assert!(count_color(&img, PALETTE[0]) > 50);

        let all_nan = chart(vec![Series::new(
            "train",
            vec![(1.0, f64::NAN), (2.0, f64::NAN)],
        )]);
        let err = all_nan.render(400, 300).unwrap_err().to_string();
        assert!(err.contains("no series has a finite point"), "{err}");
    }

    #[test]
    fn empty_charts_and_tiny_sizes_are_refused() {
        let err = chart(vec![]).render(400, 300).unwrap_err().to_string();
        assert!(err.contains("no series"), "{err}");
        let err = chart(vec![falling("train", 3, 1.0), Series::new("test", vec![])])
            .render(400, 300)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"test\" has no points"), "{err}");
        let err = chart(vec![falling("train", 3, 1.0)])
            .render(100, 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("100x100"), "{err}");
    }

    #[test]
    fn axes_use_nice_ticks_that_cover_the_data() {
        let a = Axis::new(0.013, 0.987);
        assert_eq!((a.lo, a.hi, a.step), (0.0, 1.0, 0.2));
        assert_eq!(a.label(0.6000000000000001), "0.6");
        let a = Axis::new(1.0, 75.0);
        assert_eq!(a.step, 20.0);
        assert!(a.lo <= 1.0 && a.hi >= 75.0);
        assert_eq!(a.label(70.0), "70");
        let lr = Axis::new(1e-4, 5e-4);
        assert_eq!(lr.label(5e-4), "5.0e-4");
        let flat = Axis::new(3.0, 3.0);
        assert!(flat.lo < 3.0 && flat.hi > 3.0);
        assert_eq!(Axis::new(-1.0, 1.0).label(-1e-17), "0.0");
    }
}
