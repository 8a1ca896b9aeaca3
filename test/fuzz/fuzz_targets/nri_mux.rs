//! Fuzz target `nri_mux`: see `netclaim_fuzz::nri_mux` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::nri_mux(data));
