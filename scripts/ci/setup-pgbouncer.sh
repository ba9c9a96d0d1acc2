#!/usr/bin/env bash
# CI: what tests/reliability needs besides Python: PgBouncer (Debian's, 1.18: transaction
# pooling without prepared-statement support, like the pooled endpoint it stands for),
# openssl (the self-signed CA of the TLS suite) and the PostgreSQL server binaries that the
# suites run privately (initdb/pg_ctl, normally there with the machine's PostgreSQL).
# Idempotent: installs only what is missing.
set -euo pipefail

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-pgbouncer: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  # A fresh machine has no package lists yet, and old ones may name gone versions.
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

pgbouncer --version 2>/dev/null | head -n1 || /usr/sbin/pgbouncer --version | head -n1
openssl version
ls -d /usr/lib/postgresql/*/bin | head -n1
