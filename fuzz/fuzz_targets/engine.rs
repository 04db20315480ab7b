#![no_main]
//! Fuzz target `engine`: see `otelcol_fuzz_targets::engine`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::engine(data));
