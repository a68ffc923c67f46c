//! Label-name files (`fine_label_names.txt`, `coarse_label_names.txt`, `batches.meta.txt`).
#![no_main]

use cifar_data::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::label_names(data));
