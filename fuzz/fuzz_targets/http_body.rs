#![no_main]
//! Fuzz target `http_body`: see `otelcol_fuzz_targets::http_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::http_body(data));
