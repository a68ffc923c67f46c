//! A small raster canvas shared by the plots and the image grid: filled rectangles, lines and text
//! in the 8x8 bitmap font of the `font8x8` crate, so that nothing depends on fonts installed on the
//! machine. Every drawing call clips to the canvas; nothing here can panic on coordinates.

use std::path::Path;

use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{ImageEncoder, Rgb, RgbImage};

use crate::error::{Error, Result};

/// Side of one glyph of the bitmap font, in pixels at scale 1.
pub const GLYPH: u32 = 8;

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);

/// Width in pixels of `text` drawn at `scale` (one glyph per character).
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// `text` cut to at most `max_chars` characters; a cut text ends in `..` so the reader sees it was
/// shortened.
pub fn fit_text(text: &str, max_chars: usize) -> String {
    let n = text.chars().count();
    if n <= max_chars {
        return text.to_string();
    }
    if max_chars < 3 {
        return text.chars().take(max_chars).collect();
    }
    let mut cut: String = text.chars().take(max_chars - 2).collect();
    cut.push_str("..");
    cut
}

/// An RGB image being drawn on, with clipped primitives.
pub struct Canvas {
    pub img: RgbImage,
}

impl Canvas {
    /// A `width` x `height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Rgb<u8>) -> Self {
        Canvas {
            img: RgbImage::from_pixel(width, height, background),
        }
    }

    /// Sets one pixel; coordinates outside the canvas are ignored.
    pub fn put(&mut self, x: i64, y: i64, color: Rgb<u8>) {
        if x >= 0
            && y >= 0
            && (x as u64) < self.img.width() as u64
            && (y as u64) < self.img.height() as u64
        {
            self.img.put_pixel(x as u32, y as u32, color);
        }
    }

    /// Fills the rectangle with top-left corner (x, y), `w` wide and `h` high.
    pub fn fill_rect(&mut self, x: i64, y: i64, w: u32, h: u32, color: Rgb<u8>) {
        for yy in y..y + h as i64 {
            for xx in x..x + w as i64 {
                self.put(xx, yy, color);
            }
        }
    }

    /// The outline, one pixel thick, of the rectangle with top-left corner (x, y).
    pub fn stroke_rect(&mut self, x: i64, y: i64, w: u32, h: u32, color: Rgb<u8>) {
        if w == 0 || h == 0 {
            return;
        }
        let (r, b) = (x + w as i64 - 1, y + h as i64 - 1);
        self.line(x, y, r, y, color, 1);
        self.line(x, b, r, b, color, 1);
        self.line(x, y, x, b, color, 1);
        self.line(r, y, r, b, color, 1);
    }

    /// A straight line from (x0, y0) to (x1, y1) (Bresenham), `thickness` pixels wide: each pixel
    /// of the line is drawn as a `thickness` x `thickness` square.
    pub fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>, thickness: u32) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let half = (thickness / 2) as i64;
        loop {
            self.fill_rect(x - half, y - half, thickness, thickness, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` left to right with its top-left corner at (x, y), each font pixel a
    /// `scale` x `scale` square. Characters outside the font's basic Latin set are drawn as `?`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb<u8>, scale: u32) {
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph(c);
            let left = x + (i as u32 * GLYPH * scale) as i64;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits & (1 << col) != 0 {
                        let px = left + (col * scale) as i64;
                        let py = y + (row as u32 * scale) as i64;
                        self.fill_rect(px, py, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Draws `text` rotated a quarter turn counter-clockwise (read from bottom to top), with the
    /// bottom-left corner of its first glyph at (x, y). Used for the y-axis label.
    pub fn text_vertical(&mut self, x: i64, y: i64, text: &str, color: Rgb<u8>) {
        for (i, c) in text.chars().enumerate() {
            let glyph = glyph(c);
            let bottom = y - (i as u32 * GLYPH) as i64;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH as i64 {
                    if bits & (1 << col) != 0 {
                        // Glyph pixel (col, row) goes to (row, -col) after the rotation.
                        self.put(x + row as i64, bottom - col, color);
                    }
                }
            }
        }
    }
}

/// The 8x8 bitmap of `c`: one byte per row, bit 0 the leftmost pixel.
fn glyph(c: char) -> [u8; 8] {
    BASIC_FONTS
        .get(c)
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

/// The PNG encoding of `img`. The bytes depend only on the pixels (no timestamps), so the same
/// picture always gives the same file.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::invalid("encode_png", e.to_string()))?;
    Ok(bytes)
}

/// Encodes `img` as PNG and writes it to `path`.
pub fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    let bytes = encode_png(img)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_text_cuts_long_text_and_marks_the_cut() {
        assert_eq!(fit_text("apple", 8), "apple");
        assert_eq!(fit_text("aquarium_fish", 8), "aquari..");
        assert_eq!(fit_text("aquarium_fish", 2), "aq");
        assert_eq!(fit_text("", 0), "");
    }

    #[test]
    fn text_draws_inside_its_box_only() {
        let mut c = Canvas::new(40, 20, WHITE);
        c.text(2, 3, "Hi", BLACK, 1);
        let mut inked = 0;
        for (x, y, p) in c.img.enumerate_pixels() {
            if *p == BLACK {
                inked += 1;
                assert!(
                    (2..2 + 16).contains(&x) && (3..3 + 8).contains(&y),
                    "ink at ({x}, {y})"
                );
            }
        }
        assert!(inked > 10);
    }

    #[test]
    fn drawing_off_the_canvas_is_clipped() {
        let mut c = Canvas::new(10, 10, WHITE);
        c.line(-50, -50, 60, 60, BLACK, 3);
        c.text(-100, 5, "clipped text", BLACK, 2);
        c.text_vertical(5, 500, "up", BLACK);
        assert_eq!(*c.img.get_pixel(5, 5), BLACK);
    }
}
