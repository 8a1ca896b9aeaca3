//! Fuzz target `nri_ttrpc`: see `netclaim_fuzz::nri_ttrpc` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::nri_ttrpc(data));
