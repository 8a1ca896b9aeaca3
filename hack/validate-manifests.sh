#!/usr/bin/env bash
# Validates every manifest in examples/, the rendered deploy/install.yaml, and what
# `netclaim devices -o yaml` prints against the OpenAPI-derived schemas of Kubernetes 1.34,
# 1.35, 1.36 and 1.37 (PyPI kubernetes-validate 1.37.0; --strict rejects unknown fields).
# CEL rules and numeric limits are checked by test/tests/examples.rs and the API server
# stand-in.
# Custom resources (the NetworkAttachmentDefinition and PodNetwork examples) have no schema
# here: kubernetes-validate warns and skips them; examples.rs checks a NAD's spec.config and
# a PodNetwork's spec.parameters with netclaim's parsers (the CRD itself is validated here).
#
# The devices output comes from a throwaway network namespace (run as root) holding veths
# named like the sysfs fixtures (test/fixtures/sysfs: PCI, NUMA, SR-IOV and RDMA facts),
# one of them without carrier (so the output has a device taint) and one a shared parent
# (consumable capacity fields), so every kind of field netclaim publishes is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=(1.34.0 1.35.0 1.36.0 1.37.0)
venv=target/pyvenv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0'
fi
# --install-only: just the validator (test/tests/install.rs runs it on the overlays).
[ "${1:-}" != --install-only ] || exit 0
shopt -s nullglob
files=(examples/*.yaml examples/*/*.yaml deploy/install.yaml)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no manifests in examples/" >&2
  exit 1
fi

cargo build --quiet -p netclaim --bin netclaim
ns="netclaim-validate-$$"
out=target/validate-manifests
mkdir -p "$out"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
in_ns() { ip -n "$ns" "$@"; }
in_ns link add ens1f0 type veth peer name ens1f0-peer
in_ns link add ens2 type veth peer name ens2-peer
in_ns link set ens1f0-peer up
in_ns link set ens1f0 up
in_ns link set ens2 up # its peer stays down: no carrier, so ens2 is tainted
in_ns addr add 192.0.2.10/24 dev ens1f0
devices="$out/devices.yaml"
ip netns exec "$ns" target/debug/netclaim devices -o yaml --node-name validate-node \
  --sysfs-root test/fixtures/sysfs --include-virtual \
  --filter '!device.attributes["netclaim.dev"].ifName.endsWith("-peer")' \
  --shared-filter 'device.attributes["netclaim.dev"].ifName == "ens1f0"' \
  --unhealthy-taint-effect NoExecute >"$devices"
# The output must hold what is being checked, or the check proves nothing.
for expected in 'resource.kubernetes.io/pcieRoot' 'resource.kubernetes.io/numaNode' \
  'allowMultipleAllocations: true' 'requestPolicy:' 'key: "netclaim.dev/unhealthy"' \
  'effect: "NoExecute"'; do
  grep -qF "$expected" "$devices" || {
    echo "validate-manifests: 'netclaim devices -o yaml' printed no '$expected':" >&2
    cat "$devices" >&2
    exit 1
  }
done

for version in "${versions[@]}"; do
  echo "== Kubernetes $version"
  "$venv/bin/kubernetes-validate" -k "$version" --strict "${files[@]}" "$devices"
done
