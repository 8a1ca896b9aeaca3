#!/usr/bin/env bash
# A short fuzz pass of every cargo-fuzz target in test/fuzz (CI runs it from hack/test.sh):
# builds the targets, runs each one in turn from its committed corpus for a bounded time,
# and fails on the first crash (libFuzzer prints the input and writes it under
# test/fuzz/artifacts/<target>/). New inputs go to a scratch directory: CI never changes the
# committed corpus. Long runs and corpus minimization: docs/fuzzing.md.
#
# Usage: hack/fuzz.sh [seconds per target]   (default 5; or NETCLAIM_FUZZ_SECONDS)
#   NETCLAIM_FUZZ_SANITIZER=address   build with AddressSanitizer (default: none)
#   NETCLAIM_FUZZ_TARGETS="config nri_mux"   run only these targets
#   NETCLAIM_FUZZ_PROFILE=release     an optimized build for long runs (default: dev)
#
# The default dev build is what keeps this cheap in CI: the fuzz crate links the whole
# driver, and cargo-fuzz's release build compiles every crate of it with one codegen unit
# (and optimizations). The dev build runs fewer executions per second, which does not
# matter for a pass of a few seconds; long runs use release (docs/fuzzing.md).
#
# Only the stable toolchain exists here: cargo-fuzz's flags for `-s none` are stable rustc
# flags (sancov passes, LLVM options); RUSTC_BOOTSTRAP=1 lets stable rustc take
# `-Zsanitizer=address` for NETCLAIM_FUZZ_SANITIZER=address.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR=test/fuzz
seconds=${1:-${NETCLAIM_FUZZ_SECONDS:-5}}
sanitizer=${NETCLAIM_FUZZ_SANITIZER:-none}
case ${NETCLAIM_FUZZ_PROFILE:-dev} in
  dev)
    profile=(--dev)
    # No debug info: it is most of the link time and size; a crash still prints the panic
    # and saves the input (rebuild with NETCLAIM_FUZZ_PROFILE=release for stacks).
    export CARGO_PROFILE_DEV_DEBUG=0
    ;;
  release) profile=(--release) ;;
  *) echo "fuzz.sh: NETCLAIM_FUZZ_PROFILE is dev or release" >&2; exit 2 ;;
esac

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  # A debug build of the tool: it only drives cargo, and it builds in about half the time.
  cargo install cargo-fuzz --locked --debug --version "$CARGO_FUZZ_VERSION"
fi
if [ "$sanitizer" != none ]; then
  # Only for sanitizers: build scripts (proc-macro2, anyhow, ...) watch this variable, so
  # setting it for `-s none` too would rebuild everything whenever it changes.
  export RUSTC_BOOTSTRAP=1
fi

# The fuzz crate has its own lock file; refuse to run on a stale one (like --locked).
cargo metadata --locked --format-version 1 --manifest-path "$FUZZ_DIR/Cargo.toml" >/dev/null

if [ -n "${NETCLAIM_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$NETCLAIM_FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
fi
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz.sh: no fuzz targets found in $FUZZ_DIR" >&2; exit 1; }

cargo fuzz build --fuzz-dir "$FUZZ_DIR" -s "$sanitizer" "${profile[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  corpus="$FUZZ_DIR/corpus/$target"
  [ -n "$(ls -A "$corpus" 2>/dev/null)" ] || { echo "fuzz.sh: $corpus is missing or empty" >&2; exit 1; }
  mkdir -p "$scratch/$target"
  inputs=("$scratch/$target" "$corpus")
  [ -d "$FUZZ_DIR/regressions/$target" ] && inputs+=("$FUZZ_DIR/regressions/$target")
  options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  [ -f "$FUZZ_DIR/dicts/$target.dict" ] && options+=(-dict="$FUZZ_DIR/dicts/$target.dict")
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  if ! cargo fuzz run --fuzz-dir "$FUZZ_DIR" -s "$sanitizer" "${profile[@]}" "$target" "${inputs[@]}" -- "${options[@]}"; then
    echo "fuzz.sh: fuzz target $target FAILED (the input is under $FUZZ_DIR/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
