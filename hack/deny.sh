#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml): licenses, bans (duplicate
# versions warn, wildcard requirements fail) and sources (crates.io only), for the whole
# workspace (the fuzz crate test/fuzz included). Fails on any error.
#
# The advisories check is not run: it needs the RustSec advisory database from GitHub,
# which this project's machines and CI cannot reach (see deny.toml, docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qF "$CARGO_DENY_VERSION"; then
  echo "deny.sh: installing cargo-deny $CARGO_DENY_VERSION from crates.io"
  # A debug build: its release profile is fat LTO with one codegen unit, and the checks
  # run here take about 2 s of CPU either way. Measured cold (docs/fuzzing.md): about
  # 2 min of CPU to build, so about a minute on 2 idle cores plus the download.
  cargo install cargo-deny --locked --debug --version "$CARGO_DENY_VERSION"
fi

# The lock file must be current: cargo-deny would otherwise resolve a new graph.
cargo metadata --locked --format-version 1 >/dev/null

cargo deny check --hide-inclusion-graph bans licenses sources
