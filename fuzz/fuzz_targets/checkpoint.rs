//! A checkpoint file as `eval`, `predict` and `--resume` load it: the safetensors framing, the
//! tensors, the metadata and the settings inside it, the network built from them.
#![no_main]

use trainer::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::checkpoint(data));
