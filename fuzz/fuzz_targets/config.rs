#![no_main]
//! Fuzz target `config`: see `otelcol_fuzz_targets::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::config(data));
