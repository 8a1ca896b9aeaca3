#!/usr/bin/env bash
# Validates every manifest in examples/ and what `netclaim devices -o yaml` prints against
# the OpenAPI-derived schemas of Kubernetes 1.34 (PyPI kubernetes-validate, --strict rejects
# unknown fields). CEL rules and numeric limits are checked by test/tests/examples.rs.
# Custom resources (the NetworkAttachmentDefinition and PodNetwork examples) have no schema
# here: kubernetes-validate warns and skips them; examples.rs checks a NAD's spec.config and
# a PodNetwork's spec.parameters with netclaim's parsers (the CRD itself is validated here).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyvenv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'kubernetes-validate==1.37.0'
fi
shopt -s nullglob
files=(examples/*.yaml examples/*/*.yaml)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no manifests in examples/" >&2
  exit 1
fi
"$venv/bin/kubernetes-validate" -k 1.34.0 --strict "${files[@]}"
