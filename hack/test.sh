#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (as root), then
# runs formatting, lints, every test (unit, stand-in, netns, real containerd) and the
# manifest schema checks. Usage: hack/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "node dependencies (runc, CNI plugins, containerd 1.7.24 with NRI)"
bash hack/install-deps.sh

step "rust components"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
# The tests that need a real containerd fail instead of skipping when it is missing: this
# script installed it.
export NETCLAIM_REQUIRE_CONTAINERD=1
cargo test --workspace --locked --no-fail-fast

step "manifests against the official Kubernetes 1.34 schemas"
bash hack/validate-manifests.sh

step "the demo (the README's main command), end to end on the installed containerd"
NETCLAIM_DEMO_NO_INSTALL=1 bash hack/demo.sh
