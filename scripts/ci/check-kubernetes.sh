#!/usr/bin/env bash
# CI: the Kubernetes manifests validate, offline and strictly (unknown fields are errors),
# against the oldest and the newest Kubernetes they are written for. The schemas ship with
# kubernetes-validate (a dev dependency). The policy checks are tests/test_kubernetes.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.local/bin:$PATH"
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for version in 1.30.0 1.37.0; do
  uv run --frozen kubernetes-validate --strict --kubernetes-version "$version" "${manifests[@]}"
done
