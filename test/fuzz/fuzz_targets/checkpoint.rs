//! Fuzz target `checkpoint`: see `netclaim_fuzz::checkpoint` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::checkpoint(data));
