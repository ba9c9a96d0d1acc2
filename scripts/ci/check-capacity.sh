#!/usr/bin/env bash
# Capacity smoke: the service and the bare-minimum ceiling app side by side under wrk, 4 s of
# load (list and toggle at c=10, 1 s each per app; wrk counts whole seconds), about 20 s with
# start-up. Fails only on errors or no requests, never on speed (the comparison itself:
# `uv run python -m loadtest.capacity`, see loadtest/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
server_url="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
timeout 180 uv run python -m loadtest.capacity --smoke --server-url "$server_url"
