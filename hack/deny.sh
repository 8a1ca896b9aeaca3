#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml): licenses, bans (duplicate
# versions warn, wildcard requirements fail) and sources (crates.io only), for the
# workspace and for the fuzz crate's own workspace (test/fuzz). Fails on any error.
#
# The advisories check is not run: it needs the RustSec advisory database from GitHub,
# which this project's machines and CI cannot reach (see deny.toml, docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qF "$CARGO_DENY_VERSION"; then
  echo "deny.sh: installing cargo-deny $CARGO_DENY_VERSION from crates.io"
  # Its release profile is fat LTO with one codegen unit; a checker does not need that,
  # and without it the install takes about half the time on 2 cores.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi

# Both lock files must be current: cargo-deny would otherwise resolve a new graph.
cargo metadata --locked --format-version 1 >/dev/null
cargo metadata --locked --format-version 1 --manifest-path test/fuzz/Cargo.toml >/dev/null

echo "deny.sh: workspace"
cargo deny check --hide-inclusion-graph bans licenses sources
echo "deny.sh: fuzz crate (test/fuzz)"
cargo deny --manifest-path test/fuzz/Cargo.toml --config deny.toml \
  check --hide-inclusion-graph bans licenses sources
