//! CIFAR-100 record files (`train.bin`, `test.bin`): 2 label bytes + 3072 pixel bytes a record.
#![no_main]

use cifar_data::format::Format;
use cifar_data::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::records(data, Format::Cifar100));
