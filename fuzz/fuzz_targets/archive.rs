//! tar.gz extraction into a temporary directory, as `trainer download` unpacks an archive.
#![no_main]

use cifar_data::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::archive(data));
