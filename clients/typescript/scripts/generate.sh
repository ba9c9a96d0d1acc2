#!/usr/bin/env bash
# Regenerates src/schema.d.ts from the service's own OpenAPI document, taken from the app in
# process (no server, no database: create_app() only builds the routes). One command:
#   clients/typescript/scripts/generate.sh          (or `npm run generate` in clients/typescript)
# Needs uv (the Python project) and `npm ci` done in clients/typescript.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
openapi="$(mktemp --suffix=.json)"
trap 'rm -f "$openapi"' EXIT

# A dummy secret and URL: they satisfy the settings checks and appear nowhere in the document.
(cd "$root" && uv run --frozen --quiet python -c '
import json, sys
from api.app import create_app
from api.settings import Settings
settings = Settings(
    _env_file=None,
    database_url="postgresql://openapi@127.0.0.1:5432/unused",
    better_auth_secret="openapi-export-" + "0" * 48,
)
json.dump(create_app(settings).openapi(), sys.stdout, indent=2, sort_keys=True)
') >"$openapi"

cd "$here"
./node_modules/.bin/openapi-typescript "$openapi" --output src/schema.d.ts --silent
echo "generate: src/schema.d.ts from the app's OpenAPI ($(wc -c <"$openapi") bytes)"
