#!/usr/bin/env bash
# A short fuzz pass of every fuzz target in test/fuzz (CI runs it from hack/test.sh, after
# the tests): builds the targets, runs each one in turn from its committed corpus and
# regression inputs for a bounded time, and fails on the first crash (libFuzzer prints the
# input and writes it under test/fuzz/artifacts/<target>/). New inputs go to a scratch
# directory: CI never changes the committed corpus. Long runs, corpus minimization and
# reproducing a crash: docs/fuzzing.md.
#
# Usage: hack/fuzz.sh [seconds per target]   (default 5; or NETCLAIM_FUZZ_SECONDS)
#   NETCLAIM_FUZZ_TARGETS="config nri_mux"   run only these targets
#
# The build is what keeps this cheap: a plain `cargo build` of the fuzz crate (a workspace
# member) in the dev profile, with netclaim's own crates instrumented by the workspace
# wrapper hack/fuzz-rustc.sh. The dependencies are those `cargo test --workspace` built
# already, so only netclaim's crates compile again; no cargo-fuzz is needed. Only stable
# rustc flags are used.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=test/fuzz
seconds=${1:-${NETCLAIM_FUZZ_SECONDS:-5}}
all_targets=(config cni_list cni_policy cni_result nri_mux nri_ttrpc checkpoint)
if [ -n "${NETCLAIM_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$NETCLAIM_FUZZ_TARGETS"
else
  targets=("${all_targets[@]}")
fi
# Every [[bin]] of the fuzz crate must be in the list above (a new target must run in CI).
mapfile -t declared < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | grep -v '^netclaim-fuzz$')
for target in "${declared[@]}"; do
  [[ " ${all_targets[*]} " == *" $target "* ]] ||
    { echo "fuzz.sh: fuzz target $target is not in hack/fuzz.sh's list" >&2; exit 1; }
done

# The dev profile as `cargo test` uses it: any other setting would rebuild the dependencies.
RUSTC_WORKSPACE_WRAPPER="$PWD/hack/fuzz-rustc.sh" \
  cargo build --locked -p netclaim-fuzz --bins --message-format=short
bin_dir=${CARGO_TARGET_DIR:-target}/debug

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  corpus="$FUZZ_DIR/corpus/$target"
  [ -n "$(ls -A "$corpus" 2>/dev/null)" ] || { echo "fuzz.sh: $corpus is missing or empty" >&2; exit 1; }
  mkdir -p "$scratch/$target" "$FUZZ_DIR/artifacts/$target"
  inputs=("$scratch/$target" "$corpus")
  [ -d "$FUZZ_DIR/regressions/$target" ] && inputs+=("$FUZZ_DIR/regressions/$target")
  options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1
    -artifact_prefix="$FUZZ_DIR/artifacts/$target/")
  [ -f "$FUZZ_DIR/dicts/$target.dict" ] && options+=(-dict="$FUZZ_DIR/dicts/$target.dict")
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  if ! "$bin_dir/$target" "${options[@]}" "${inputs[@]}"; then
    echo "fuzz.sh: fuzz target $target FAILED (the input is under $FUZZ_DIR/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
