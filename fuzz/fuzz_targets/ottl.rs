#![no_main]
//! Fuzz target `ottl`: see `otelcol_fuzz_targets::ottl`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::ottl(data));
