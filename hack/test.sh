#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (as root), then
# runs formatting, lints, supply-chain checks (cargo-deny), every test (unit, stand-in, netns,
# real containerd, fuzz corpus replay), a short fuzz pass and the manifest schema checks.
# The real-containerd tests run twice: on containerd 1.7 with the whole workspace, then on
# containerd 2.x (NETCLAIM_CONTAINERD_MAJOR=2). Usage: hack/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "node dependencies (runc, CNI plugins, containerd 1.7.24 and 2.1.9 with NRI, kubectl)"
bash hack/install-deps.sh

step "rust components"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "supply chain: cargo deny (licenses, bans, sources; the advisory database is out of reach here, see deny.toml)"
bash hack/deny.sh

# The test files that run a real containerd node: they run once per containerd major. A
# missing containerd fails them (naming hack/install-deps.sh); nothing skips.
mapfile -t containerd_tests < <(
  grep -lE 'ContainerdNode::start|RuntimeKind::Containerd' test/tests/*.rs | xargs -n1 basename | sed 's/[.]rs$//'
)
[ "${#containerd_tests[@]}" -gt 0 ] || { echo "test.sh: no real-containerd test files found" >&2; exit 1; }
failed=()

step "schema validator for test/tests/install.rs (PyPI kubernetes-validate in target/pyvenv)"
bash hack/validate-manifests.sh --install-only

step "cargo test (workspace; real-containerd tests on containerd 1.7)"
NETCLAIM_CONTAINERD_MAJOR=1 cargo test --workspace --locked --no-fail-fast || failed+=("cargo test on containerd 1.7")

step "real-containerd tests on containerd 2.x: ${containerd_tests[*]}"
NETCLAIM_CONTAINERD_MAJOR=2 cargo test --workspace --locked --no-fail-fast \
  $(printf -- '--test %s ' "${containerd_tests[@]}") || failed+=("real-containerd tests on containerd 2.x")

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi

step "fuzzing: a short pass of every fuzz target from its corpus (hack/fuzz.sh, docs/fuzzing.md)"
bash hack/fuzz.sh

step "manifests and netclaim devices -o yaml against the official Kubernetes 1.34-1.37 schemas"
bash hack/validate-manifests.sh

step "the demo (the README's main command), end to end on the installed containerd 1.7"
# The demo falls back to the runtime stand-in when containerd is missing; here that fails.
demo_log=$(mktemp)
trap 'rm -f "$demo_log"' EXIT
NETCLAIM_CONTAINERD_MAJOR=1 NETCLAIM_DEMO_NO_INSTALL=1 bash hack/demo.sh | tee "$demo_log"
grep -q '^runtime: containerd ' "$demo_log" || {
  echo "test.sh: the demo did not run on a real containerd (see its banner above)" >&2
  exit 1
}
