//! Fuzz target `cni_result`: see `netclaim_fuzz::cni_result` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::cni_result(data));
