//! An image file as `trainer predict` reads it: PNG or JPEG decoding within a memory budget,
//! then the resize to 32x32.
#![no_main]

use trainer::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::predict_image(data));
