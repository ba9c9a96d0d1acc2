#!/usr/bin/env bash
# Load-test smoke: the runner starts the real service on a fresh database, drives it with a few
# Locust users for a few seconds, and requires only that requests happened with zero errors.
# It never judges absolute speed (that is `loadtest.run run --profile spec|strict`).
set -euo pipefail
cd "$(dirname "$0")/../.."
server_url="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
timeout 180 uv run python -m loadtest.run run --profile smoke --serve \
  --database-url "$server_url" --fresh-database \
  --users 5 --spawn-rate 5 --run-time 5s --wait 0.1 0.3 --tasks-per-user 10 --warm-up 1 --settle 0.5
