//! Fuzz target `cni_policy`: see `netclaim_fuzz::cni_policy` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netclaim_fuzz::cni_policy(data));
