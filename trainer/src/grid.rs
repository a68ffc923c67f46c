//! A grid of 32x32 images, each upscaled and titled, rendered to PNG: test images with their
//! predicted and true class names (the seed's picture of what the network gets right and wrong),
//! or images with their class (`trainer preview`: what the network sees).
//!
//! A title is two lines above its image ([`Caption`]): `pred NAME` in green when the prediction is
//! right and in red when it is wrong, then `true NAME` in black; or the class name, then `#INDEX`,
//! in black. Names too long for the tile end in `..`.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::draw::{encode_png, fit_text, Canvas, BLACK, GLYPH, WHITE};
use crate::error::{Error, Result};

/// Side of a CIFAR image in pixels.
pub const IMAGE_SIDE: usize = 32;
/// Bytes of one image: 3 planes (red, green, blue) of 32 rows of 32 pixels.
pub const IMAGE_BYTES: usize = 3 * IMAGE_SIDE * IMAGE_SIDE;

const RIGHT: Rgb<u8> = Rgb([0, 130, 0]);
const WRONG: Rgb<u8> = Rgb([200, 0, 0]);
/// Space around each tile, in pixels.
const PAD: u32 = 6;
/// Height of one title line: a glyph and a gap.
const LINE: u32 = GLYPH + 3;

/// One image of the grid and its title.
#[derive(Debug, Clone, Copy)]
pub struct GridImage<'a> {
    /// chw: (3, 32, 32) bytes, red plane then green then blue, each row-major (the CIFAR layout).
    pub chw: &'a [u8],
    pub caption: Caption<'a>,
}

/// What the two title lines of an image say.
#[derive(Debug, Clone, Copy)]
pub enum Caption<'a> {
    /// The class name the network predicted (green when right, red when wrong), then the label's.
    Prediction { predicted: &'a str, truth: &'a str },
    /// The label's class name, then the image's index in its split.
    Label { class: &'a str, index: usize },
}

impl Caption<'_> {
    /// The two lines, each with its colour.
    fn lines(&self) -> [(String, Rgb<u8>); 2] {
        match *self {
            Caption::Prediction { predicted, truth } => {
                let verdict = if predicted == truth { RIGHT } else { WRONG };
                [
                    (format!("pred {predicted}"), verdict),
                    (format!("true {truth}"), BLACK),
                ]
            }
            Caption::Label { class, index } => {
                [(class.to_string(), BLACK), (format!("#{index}"), BLACK)]
            }
        }
    }
}

/// How the grid is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    /// Images per row; the last row may be shorter.
    pub columns: usize,
    /// Each image pixel becomes a `scale` x `scale` square (4 turns 32x32 into 128x128).
    pub scale: u32,
}

impl Default for GridLayout {
    /// Four images per row, upscaled four times.
    fn default() -> Self {
        GridLayout {
            columns: 4,
            scale: 4,
        }
    }
}

impl GridLayout {
    /// Width of one tile: the upscaled image and its padding.
    fn tile_width(&self) -> u32 {
        IMAGE_SIDE as u32 * self.scale + 2 * PAD
    }

    /// Height of one tile: two title lines, the upscaled image and the padding.
    fn tile_height(&self) -> u32 {
        2 * LINE + IMAGE_SIDE as u32 * self.scale + 2 * PAD
    }

    /// Width and height in pixels of the grid of `n` >= 1 images.
    pub fn size(&self, n: usize) -> (u32, u32) {
        let columns = self.columns.min(n).max(1);
        let rows = n.div_ceil(columns);
        (
            columns as u32 * self.tile_width(),
            rows as u32 * self.tile_height(),
        )
    }
}

/// Draws `images` in rows of `layout.columns`, left to right then top to bottom.
///
/// Errors: no image, an image that is not 3 x 32 x 32 bytes, zero columns, or a scale outside
/// 1..=16.
pub fn render_grid(images: &[GridImage], layout: GridLayout) -> Result<RgbImage> {
    let op = "image grid";
    if images.is_empty() {
        return Err(Error::invalid(op, "no images to draw"));
    }
    if layout.columns == 0 {
        return Err(Error::invalid(op, "columns must be at least 1"));
    }
    if !(1..=16).contains(&layout.scale) {
        return Err(Error::invalid(
            op,
            format!("scale {} is outside 1..=16", layout.scale),
        ));
    }
    if let Some((i, img)) = images
        .iter()
        .enumerate()
        .find(|(_, img)| img.chw.len() != IMAGE_BYTES)
    {
        return Err(Error::invalid(
            op,
            format!(
                "image {i} has {} bytes, expected {IMAGE_BYTES} (3 x 32 x 32)",
                img.chw.len()
            ),
        ));
    }

    let columns = layout.columns.min(images.len());
    let (tile_w, tile_h) = (layout.tile_width(), layout.tile_height());
    let (width, height) = layout.size(images.len());
    let mut canvas = Canvas::new(width, height, WHITE);
    let max_chars = ((tile_w - 2 * PAD) / GLYPH) as usize;
    for (i, img) in images.iter().enumerate() {
        let x = ((i % columns) as u32 * tile_w + PAD) as i64;
        let y = ((i / columns) as u32 * tile_h + PAD) as i64;
        for (line, (text, colour)) in img.caption.lines().iter().enumerate() {
            let top = y + (line as u32 * LINE) as i64;
            canvas.text(x, top, &fit_text(text, max_chars), *colour, 1);
        }
        draw_image(&mut canvas, x, y + 2 * LINE as i64, img.chw, layout.scale);
    }
    Ok(canvas.img)
}

/// The grid as PNG bytes (see [`render_grid`]).
pub fn grid_png(images: &[GridImage], layout: GridLayout) -> Result<Vec<u8>> {
    encode_png(&render_grid(images, layout)?)
}

/// Renders the grid and writes it to `path` as PNG.
pub fn save_grid(path: &Path, images: &[GridImage], layout: GridLayout) -> Result<()> {
    let bytes = grid_png(images, layout)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Draws one image, chw: (3, 32, 32), with its top-left corner at (x, y), each pixel a
/// `scale` x `scale` square.
fn draw_image(canvas: &mut Canvas, x: i64, y: i64, chw: &[u8], scale: u32) {
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    for row in 0..IMAGE_SIDE {
        for col in 0..IMAGE_SIDE {
            let at = row * IMAGE_SIDE + col;
            let color = Rgb([chw[at], chw[plane + at], chw[2 * plane + at]]);
            let px = x + (col as u32 * scale) as i64;
            let py = y + (row as u32 * scale) as i64;
            canvas.fill_rect(px, py, scale, scale, color);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose red plane is `r`, green `g` and blue `b` everywhere.
    fn solid(r: u8, g: u8, b: u8) -> Vec<u8> {
        [r, g, b]
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, 1024))
            .collect()
    }

    #[test]
    fn lays_out_n_images_in_rows_with_planes_in_the_right_channels() {
        let red = solid(250, 10, 20);
        let blue = solid(5, 15, 240);
        let images: Vec<GridImage> = (0..10)
            .map(|i| GridImage {
                chw: if i % 2 == 0 { &red } else { &blue },
                caption: Caption::Prediction {
                    predicted: "apple",
                    truth: if i == 3 { "pear" } else { "apple" },
                },
            })
            .collect();
        let layout = GridLayout {
            columns: 4,
            scale: 4,
        };
        let img = render_grid(&images, layout).unwrap();
        let (tw, th) = (layout.tile_width(), layout.tile_height());
        assert_eq!(img.dimensions(), (4 * tw, 3 * th));
        // The centre of image 0 (row 0, column 0) and of image 5 (row 1, column 1).
        let centre = |i: u32| {
            let x = (i % 4) * tw + PAD + 64;
            let y = (i / 4) * th + PAD + 2 * LINE + 64;
            *img.get_pixel(x, y)
        };
        assert_eq!(centre(0), Rgb([250, 10, 20]));
        assert_eq!(centre(5), Rgb([5, 15, 240]));
        // The unused tiles of the last row stay white.
        assert_eq!(*img.get_pixel(3 * tw + tw / 2, 2 * th + th / 2), WHITE);
        // One wrong prediction is titled in red, nine right ones in green.
        assert!(img.pixels().any(|p| *p == WRONG));
        assert!(img.pixels().filter(|p| **p == RIGHT).count() > 9 * 20);
    }

    #[test]
    fn upscaling_repeats_each_pixel() {
        let mut chw = solid(0, 0, 0);
        chw[0] = 255; // red, top-left pixel
        let images = [GridImage {
            chw: &chw,
            caption: Caption::Prediction {
                predicted: "a",
                truth: "a",
            },
        }];
        let img = render_grid(
            &images,
            GridLayout {
                columns: 8,
                scale: 3,
            },
        )
        .unwrap();
        let (x0, y0) = (PAD, PAD + 2 * LINE);
        for (dx, dy) in [(0, 0), (2, 2), (0, 2)] {
            assert_eq!(*img.get_pixel(x0 + dx, y0 + dy), Rgb([255, 0, 0]));
        }
        assert_eq!(*img.get_pixel(x0 + 3, y0), Rgb([0, 0, 0]));
        assert_eq!(
            img.width(),
            32 * 3 + 2 * PAD,
            "a single image makes a single column"
        );
    }

    #[test]
    fn label_captions_are_black_and_the_size_is_known_beforehand() {
        let chw = solid(255, 255, 255);
        let images: Vec<GridImage> = (0..5)
            .map(|index| GridImage {
                chw: &chw,
                caption: Caption::Label {
                    class: "apple",
                    index,
                },
            })
            .collect();
        let layout = GridLayout {
            columns: 2,
            scale: 1,
        };
        let img = render_grid(&images, layout).unwrap();
        let (tw, th) = (layout.tile_width(), layout.tile_height());
        assert_eq!(layout.size(5), (2 * tw, 3 * th));
        assert_eq!(img.dimensions(), layout.size(5));
        assert!(img.pixels().all(|p| *p != RIGHT && *p != WRONG));
        assert!(img.pixels().any(|p| *p == BLACK));
    }

    #[test]
    fn long_names_stay_inside_their_tile() {
        let chw = solid(255, 255, 255);
        let long = "a_class_name_far_too_long_for_any_tile";
        let images = [GridImage {
            chw: &chw,
            caption: Caption::Prediction {
                predicted: long,
                truth: long,
            },
        }; 2];
        let layout = GridLayout {
            columns: 2,
            scale: 2,
        };
        let img = render_grid(&images, layout).unwrap();
        let tw = layout.tile_width();
        // Nothing is drawn in the padding between the two tiles.
        for x in tw - PAD..tw + PAD {
            for y in 0..2 * LINE {
                assert_eq!(*img.get_pixel(x, y), WHITE, "text spilled at ({x}, {y})");
            }
        }
    }

    #[test]
    fn same_input_gives_the_same_png() {
        let chw: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i * 7 % 256) as u8).collect();
        let images = [GridImage {
            chw: &chw,
            caption: Caption::Prediction {
                predicted: "maple_tree",
                truth: "oak_tree",
            },
        }; 8];
        let a = grid_png(&images, GridLayout::default()).unwrap();
        assert_eq!(a, grid_png(&images, GridLayout::default()).unwrap());
        let decoded = image::load_from_memory(&a).unwrap().to_rgb8();
        assert_eq!(
            decoded,
            render_grid(&images, GridLayout::default()).unwrap()
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let chw = solid(1, 2, 3);
        let ok = GridImage {
            chw: &chw,
            caption: Caption::Prediction {
                predicted: "a",
                truth: "b",
            },
        };
        let err = render_grid(&[], GridLayout::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no images"), "{err}");
        let short = GridImage {
            chw: &chw[..3000],
            ..ok
        };
        let err = render_grid(&[ok, short], GridLayout::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image 1 has 3000 bytes, expected 3072"),
            "{err}"
        );
        let err = render_grid(
            &[ok],
            GridLayout {
                columns: 0,
                scale: 4,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("columns"), "{err}");
        let err = render_grid(
            &[ok],
            GridLayout {
                columns: 2,
                scale: 0,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scale 0"), "{err}");
    }
}
