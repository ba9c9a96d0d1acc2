#!/usr/bin/env bash
# The frontend side: Node.js and npm (Debian's, as scripts/ci/setup-node.sh installs them) and
# the pinned packages of clients/typescript and examples/nextjs (npm ci, exactly the lockfiles).
# Idempotent: a folder whose lockfile is what was installed last is left alone.
# Next.js 15 needs Node.js >= 18.18; better-auth needs >= 20.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  bash scripts/ci/setup-node.sh
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
echo "setup-frontend: node $(node --version), npm $(npm --version)"
if [ "$node_major" -lt 20 ]; then
  echo "setup-frontend: Node.js $node_major is too old: Next.js 15 and better-auth need 20+" >&2
  exit 1
fi

export NEXT_TELEMETRY_DISABLED=1
# clients/typescript first: examples/nextjs links it (file:../../clients/typescript) and its
# imports of openapi-fetch resolve in clients/typescript/node_modules.
for dir in clients/typescript examples/nextjs; do
  stamp="$dir/node_modules/.installed-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "setup-frontend: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
done
# A broken install fails here, not in the middle of the tests.
(cd examples/nextjs && node -e '
  const { readFileSync } = require("node:fs");
  for (const name of ["next", "react", "better-auth", "@tasks-api/client"]) {
    const pkg = JSON.parse(readFileSync("node_modules/" + name + "/package.json", "utf8"));
    console.log("setup-frontend: " + name + " " + pkg.version);
  }
  require.resolve("next/dist/bin/next");')
