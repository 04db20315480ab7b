#![no_main]
//! Fuzz target `json_fast_path`: see `otelcol_fuzz_targets::json_fast_path`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::json_fast_path(data));
