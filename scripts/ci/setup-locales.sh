#!/usr/bin/env bash
# CI: the en_US.UTF-8 locale, so that tests/test_title_order.py can create a database with
# it (beside C and C.UTF-8) and show that sort=title does not follow the database's locale.
# PostgreSQL checks a database's locale with setlocale() when it is created. The locale is
# compiled as a directory (--no-archive): glibc remembers that locale-archive was missing in a
# process that already looked for it (a PostgreSQL started before this script), but it reads a
# locale directory on every lookup, so a running server can use it at once. Idempotent.
set -euo pipefail

if [ -d /usr/lib/locale/en_US.utf8 ]; then
  echo "setup-locales: en_US.UTF-8 is there"
  exit 0
fi
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if ! command -v localedef >/dev/null 2>&1 || [ ! -e /usr/share/i18n/locales/en_US ]; then
  echo "setup-locales: installing locales"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends locales
fi
"${sudo_cmd[@]}" localedef --no-archive -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias \
  en_US.UTF-8
locale -a | grep -ix 'en_US.utf8'
