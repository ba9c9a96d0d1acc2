#!/usr/bin/env bash
# CI: the real Prometheus server the observability tests start (Debian package `prometheus`).
# Idempotent: does nothing when /usr/bin/prometheus is already there.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  prometheus --version 2>&1 | head -n 1
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# Only refresh the package lists when the package is not known yet.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  $SUDO apt-get update
fi
# The package starts a system service on install where systemd runs; the tests never use it
# (they start their own on a loopback port), so keep it from starting here.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y --no-install-recommends prometheus
prometheus --version 2>&1 | head -n 1
