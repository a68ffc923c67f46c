//! CIFAR-10 record files (`data_batch_*.bin`, `test_batch.bin`): 1 label byte + 3072 pixel bytes.
#![no_main]

use cifar_data::format::Format;
use cifar_data::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::records(data, Format::Cifar10));
