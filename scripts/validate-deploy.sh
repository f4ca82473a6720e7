#!/usr/bin/env bash
# Validates deploy/kubernetes offline: every manifest against the Kubernetes API schemas
# (kubernetes-validate from PyPI, strict: unknown fields are errors) for the oldest and newest
# versions we support. The server configuration and policies embedded in config.yaml are
# checked by `cargo test -p vana-sandbox-server --test deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VALIDATE_VENV:-/tmp/vana-validate-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate
fi
manifests=$(sed -n 's/^  - \(.*\.yaml\)$/deploy\/kubernetes\/\1/p' deploy/kubernetes/kustomization.yaml)
for v in 1.30 1.37; do
  # shellcheck disable=SC2086
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" $manifests
done
echo "deploy/kubernetes: $(echo "$manifests" | wc -w) manifests valid for Kubernetes 1.30 and 1.37"
