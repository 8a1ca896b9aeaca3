#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for hack/fuzz.sh: compiles the workspace's own crates with the
# SanitizerCoverage instrumentation libFuzzer reads (the flags cargo-fuzz passes for
# `-s none`), and everything else unchanged. Cargo calls it as `fuzz-rustc.sh <rustc>
# <args>` for workspace members only, and keeps their instrumented artifacts apart from
# the normal ones (a workspace wrapper is part of their metadata hash), while the
# dependencies are the very ones `cargo test` already built: so the fuzz build in CI
# recompiles netclaim's crates, not its dependency tree.
#
# Dependencies are not instrumented: the fuzzer sees coverage of netclaim's code (its
# parsers, and the serde code generated for its types), not of serde_json's or prost's
# internals. Long runs use cargo-fuzz, which instruments everything (docs/fuzzing.md).
set -euo pipefail
rustc=$1
shift
crate=
prev=
for arg in "$@"; do
  [ "$prev" = --crate-name ] && crate=$arg
  prev=$arg
done
case $crate in
  # No crate (rustc -vV), cargo's target probe (___), build scripts: no instrumentation;
  # a build script links without libFuzzer.
  '' | ___ | build_script_*) exec "$rustc" "$@" ;;
esac
extra=()
# The fuzz binaries: no debug info in the output (most of the link time); a crash still
# prints its panic and saves its input.
[[ " $* " == *" --crate-type bin "* ]] && extra+=(-Cstrip=debuginfo)
exec "$rustc" "$@" "${extra[@]}" \
  -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing --check-cfg 'cfg(fuzzing)'
