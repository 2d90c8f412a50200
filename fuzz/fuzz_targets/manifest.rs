#![no_main]
//! libFuzzer harness of zlayer_fuzz_targets::manifest (see docs/fuzzing.md).

libfuzzer_sys::fuzz_target!(|data: &[u8]| zlayer_fuzz_targets::manifest(data));
