#!/usr/bin/env bash
# CI: HAProxy (Debian's) for tests/reliability/test_rolling_restart.py, which starts its own
# on loopback in front of three instances (`option httpchk GET /ready`), and util-linux's
# `unshare` for the PID 1 tests of tests/reliability/test_signals.py.
# Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-haproxy: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

(command -v haproxy >/dev/null 2>&1 && haproxy -v || /usr/sbin/haproxy -v) | head -n1
unshare --version
