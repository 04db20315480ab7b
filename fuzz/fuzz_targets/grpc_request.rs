#![no_main]
//! Fuzz target `grpc_request`: see `otelcol_fuzz_targets::grpc_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| otelcol_fuzz_targets::grpc_request(data));
