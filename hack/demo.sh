#!/usr/bin/env bash
# The main job, on a fresh Debian machine as root, no cluster needed: a node built in
# network namespaces gets a pod with a claimed NIC. Installs the node parts (runc, CNI
# plugins, containerd 1.7.24 and 2.1.9 with NRI) unless NETCLAIM_DEMO_NO_INSTALL=1, in which
# case it falls back, loudly, to the NRI runtime stand-in when containerd is missing.
# NETCLAIM_CONTAINERD_MAJOR=2 runs it on containerd 2.x (default: 1.7).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (it creates network namespaces and moves interfaces)" >&2
  exit 1
fi
if [ -z "${NETCLAIM_DEMO_NO_INSTALL:-}" ]; then
  bash hack/install-deps.sh >/dev/null
fi
cargo build --quiet -p netclaim --bin netclaim -p netclaim-test --bin netclaim-demo
exec target/debug/netclaim-demo "$@"
