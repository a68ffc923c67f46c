//! A checkpoint given as its JSON header and tensor bytes (split at the first zero byte), framed
//! by the harness, so that mutations of the header reach the shapes, dtypes, offsets, metadata
//! and settings.
#![no_main]

use trainer::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::checkpoint_header(data));
