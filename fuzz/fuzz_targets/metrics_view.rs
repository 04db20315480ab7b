#![no_main]
//! Fuzz target `metrics_view`: see `otelcol_fuzz_targets::metrics_view`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::metrics_view(data));
