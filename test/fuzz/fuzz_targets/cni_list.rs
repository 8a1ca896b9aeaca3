//! Fuzz target `cni_list`: see `netclaim_fuzz::cni_list` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::cni_list(data));
