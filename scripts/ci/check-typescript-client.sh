#!/usr/bin/env bash
# Drift check for the TypeScript client: regenerates clients/typescript/src/schema.d.ts from the
# app's own OpenAPI and fails on any difference from the committed file, then type-checks the
# client, its example, and the Next.js example against it (tsc --noEmit).
# Fix a failure with: clients/typescript/scripts/generate.sh, then commit src/schema.d.ts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export NEXT_TELEMETRY_DISABLED=1

bash scripts/ci/setup-frontend.sh >/dev/null
schema=clients/typescript/src/schema.d.ts
committed="$(mktemp)"
trap 'rm -f "$committed"' EXIT
cp "$schema" "$committed"
clients/typescript/scripts/generate.sh >/dev/null
if ! diff -u "$committed" "$schema"; then
  cp "$committed" "$schema"  # leave the work tree as it was
  echo "check-typescript-client: $schema is out of date with the API's OpenAPI." >&2
  echo "  Run clients/typescript/scripts/generate.sh and commit the result." >&2
  exit 1
fi
echo "check-typescript-client: $schema matches the app's OpenAPI"

(cd clients/typescript && ./node_modules/.bin/tsc --noEmit -p .)
echo "check-typescript-client: tsc --noEmit passed for clients/typescript (client + example.ts)"
# `next typegen` writes next-env.d.ts and the route types that the app's tsconfig includes.
(cd examples/nextjs && ./node_modules/.bin/next typegen >/dev/null && ./node_modules/.bin/tsc --noEmit -p .)
echo "check-typescript-client: tsc --noEmit passed for examples/nextjs"
