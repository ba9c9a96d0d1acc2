#!/usr/bin/env bash
# Real components for tests/betterauth and tests/browser: Debian's Chromium (a browser download
# cannot work here), Node.js, and the pinned npm packages of the Better Auth harness.
# Idempotent: what is already there is left alone; `apt-get update` runs at most once.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

if [ ! -x /usr/bin/chromium ]; then
  echo "setup-node: installing Debian's chromium"
  apt_install chromium
fi
/usr/bin/chromium --version 2>/dev/null || true

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-node: installing nodejs and npm"
  apt_install nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
echo "setup-node: node $(node --version), npm $(npm --version)"
if [ "$node_major" -lt 20 ]; then
  echo "setup-node: WARNING: Node.js $node_major is older than 20, which better-auth needs" >&2
fi

# npm ci (a clean install of exactly the lockfile) unless this lockfile is what was installed.
harness=tests/betterauth
stamp="$harness/node_modules/.installed-lock.sha256"
want="$(sha256sum "$harness/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup-node: npm ci in $harness"
  (cd "$harness" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
# The harness's imports resolve (a broken install fails here, not in the middle of the tests).
(cd "$harness" && node --input-type=module -e '
  await import("better-auth"); await import("better-auth/plugins/jwt");
  await import("better-auth/adapters/memory"); await import("better-auth/node");
  const { readFileSync } = await import("node:fs");
  const pkg = JSON.parse(readFileSync("node_modules/better-auth/package.json", "utf8"));
  console.log("setup-node: better-auth " + pkg.version);
')
