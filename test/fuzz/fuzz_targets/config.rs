//! Fuzz target `config`: see `netclaim_fuzz::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::config(data));
