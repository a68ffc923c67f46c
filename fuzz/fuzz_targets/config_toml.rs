//! A run's `config.toml`, loaded, validated, saved and loaded again.
#![no_main]

use trainer::fuzz_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_harness::config_toml(data));
