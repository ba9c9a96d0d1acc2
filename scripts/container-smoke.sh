#!/usr/bin/env bash
# Build the image from the committed Dockerfile with podman and run it for real: /health,
# /ready (timed from container start, SC-008: under 30 s) and an authenticated create + list,
# against a fresh database on the local PostgreSQL. No Docker engine and no registry of
# images are needed: the base is Debian's python3, made here with debootstrap and cached.
#
#   bash scripts/container-smoke.sh
#
# Environment (all optional):
#   SMOKE_ADMIN_URL   a PostgreSQL URL that may CREATE/DROP DATABASE (default: the server of
#                     TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres)
#   BASE_CACHE_DIR    where the base tarball is kept (default /var/cache/tasks-api-base)
#   SMOKE_IMAGE       tag of the built image (default localhost/tasks-api:smoke)
#   SMOKE_KEEP_IMAGE  1 keeps the built image (the default); 0 removes it at the end
#
# Containers run with --network host only: publishing ports (-p) is not used here.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI's TEST_DATABASE_URL names the server; the admin connection goes to its `postgres` database.
if [ -z "${SMOKE_ADMIN_URL:-}" ] && [ -n "${TEST_DATABASE_URL:-}" ]; then
  SMOKE_ADMIN_URL="${TEST_DATABASE_URL%/*}/postgres"
fi
SMOKE_ADMIN_URL="${SMOKE_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
BASE_CACHE_DIR="${BASE_CACHE_DIR:-/var/cache/tasks-api-base}"
SMOKE_IMAGE="${SMOKE_IMAGE:-localhost/tasks-api:smoke}"
SMOKE_KEEP_IMAGE="${SMOKE_KEEP_IMAGE:-1}"
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Bump when the recipe of the base changes: a new tarball and a new tag are made.
BASE_VERSION=1
BASE_TARBALL="$BASE_CACHE_DIR/$SUITE-python3-v$BASE_VERSION.tar"
DEBIAN_IMAGE="localhost/tasks-api-debian:$SUITE-python3-v$BASE_VERSION"
BASE_IMAGE="localhost/tasks-api-base:$SUITE-python3-v$BASE_VERSION"
READY_LIMIT_SECONDS=30

# podman without systemd (as here) logs an error for each healthcheck timer it cannot set up;
# the HEALTHCHECK itself is run below with `podman healthcheck run`.
quiet_systemd() { grep -v 'unable to get systemd connection' >&2 || true; }
log() { printf '[container-smoke] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

WORK_DIR="$(mktemp -d /tmp/tasks-api-smoke.XXXXXX)"
CONTAINER="tasks-api-smoke-$$"
SMOKE_DB="tasks_smoke_$$_$RANDOM"
STARTED_CONTAINERS=()
DB_CREATED=0
ROOTFS_DIR=""

psql_admin() {
  # One statement on the admin connection, outside a transaction (CREATE/DROP DATABASE).
  python3 - "$SMOKE_ADMIN_URL" "$1" <<'PY'
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=5) as conn:
    conn.execute(sys.argv[2])
PY
}

cleanup() {
  local status=$?
  set +e
  local name
  for name in "${STARTED_CONTAINERS[@]}"; do
    if [ "$status" != 0 ]; then
      log "logs of $name (last 60 lines):"
      podman logs --tail 60 "$name" >&2 2>&1
    fi
    podman rm --force --time 10 "$name" >/dev/null 2> >(quiet_systemd)
  done
  if [ "$DB_CREATED" = 1 ]; then
    psql_admin "DROP DATABASE IF EXISTS \"$SMOKE_DB\" WITH (FORCE)" ||
      log "could not drop database $SMOKE_DB"
  fi
  if [ "$SMOKE_KEEP_IMAGE" = 0 ]; then
    podman rmi --force "$SMOKE_IMAGE" "$SMOKE_IMAGE-builder" >/dev/null 2>&1
  fi
  [ -n "$ROOTFS_DIR" ] && rm -rf "$ROOTFS_DIR" "$BASE_TARBALL.partial"
  rm -rf "$WORK_DIR"
  if [ "$status" = 0 ]; then log "PASS"; else log "FAILED (exit $status)"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# Tools: podman with runc, debootstrap for the base, psycopg (from the project) for the DB.
ensure_tools() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # With their recommends (a network stack, buildah, catatonit), as on the machine this was
    # made on.
    apt-get install -y -qq "${missing[@]}" debian-archive-keyring ca-certificates >/dev/null
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

# crun and the default ulimits fail on this kind of machine: runc, explicit limits, and no
# systemd/journald for events.
write_containers_conf() {
  cat >"$WORK_DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF="$WORK_DIR/containers.conf"
}

# The Debian mirror this machine's apt uses (deb822 .sources first, then sources.list).
debian_mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri="$(awk '
      /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+$/ && u ~ /debian\/?$/) { print u; exit } }
    ' /etc/apt/sources.list.d/*.sources)"
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri="$(awk '$1 == "deb" && $2 !~ /security/ && $2 ~ /debian\/?$/ { print $2; exit }' \
      /etc/apt/sources.list)"
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

ensure_debian_image() {
  if podman image exists "$DEBIAN_IMAGE"; then
    log "Debian python3 image $DEBIAN_IMAGE present"
    return
  fi
  if [ ! -s "$BASE_TARBALL" ]; then
    local mirror root started
    mirror="$(debian_mirror)"
    started=$SECONDS
    log "building the base with debootstrap ($SUITE, $BASE_PACKAGES) from $mirror"
    mkdir -p "$BASE_CACHE_DIR"
    root="$(mktemp -d "$BASE_CACHE_DIR/rootfs.XXXXXX")"
    ROOTFS_DIR="$root"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$mirror" \
      >"$WORK_DIR/debootstrap.log" 2>&1; then
      tail -30 "$WORK_DIR/debootstrap.log" >&2
      die "debootstrap failed"
    fi
    # What an image does not need: package lists and caches, documentation, translations.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/usr/share/locale/* "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
    tar --numeric-owner -C "$root" -cf "$BASE_TARBALL.partial" .
    mv "$BASE_TARBALL.partial" "$BASE_TARBALL"
    rm -rf "$root"
    ROOTFS_DIR=""
    log "base tarball $BASE_TARBALL ($(du -h "$BASE_TARBALL" | cut -f1)) in $((SECONDS - started)) s"
  else
    log "base tarball cached: $BASE_TARBALL"
  fi
  podman import --quiet \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    "$BASE_TARBALL" "$DEBIAN_IMAGE" >/dev/null
  log "imported $DEBIAN_IMAGE"
}

# The base handed to the Dockerfile: Debian's python3 trusting what this machine trusts (its
# outbound HTTPS may pass a TLS proxy with a CA of its own, which pip and uv in the build must
# accept). A layer of its own, so the cached tarball stays plain Debian; podman caches it.
ensure_base_image() {
  ensure_debian_image
  local ctx="$WORK_DIR/base-context"
  mkdir -p "$ctx"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
EOF
  podman build --quiet --network host --pull=never -t "$BASE_IMAGE" "$ctx" >/dev/null ||
    die "could not build $BASE_IMAGE"
  log "base image $BASE_IMAGE ready"
}

# Build one target of the Dockerfile under a tag; the image the tag named before (an earlier
# run's) is removed, so that repeated runs leave no dangling images behind.
build_tagged() {
  local target=$1 tag=$2 old_id new_id
  old_id="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
  # --format docker keeps HEALTHCHECK (the OCI format has no such field).
  if ! podman build --network host --format docker --pull=never --target "$target" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" -f Dockerfile . \
    >>"$WORK_DIR/build.log" 2>&1; then
    tail -40 "$WORK_DIR/build.log" >&2
    die "podman build --target $target failed"
  fi
  new_id="$(podman image inspect --format '{{.Id}}' "$tag")"
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
  fi
}

build_image() {
  local started=$SECONDS
  log "building $SMOKE_IMAGE (BASE_IMAGE=$BASE_IMAGE)"
  # The builder stage gets a tag too: it is the layer cache of the next run.
  build_tagged builder "$SMOKE_IMAGE-builder"
  build_tagged runtime "$SMOKE_IMAGE"
  BUILD_SECONDS=$((SECONDS - started))
  IMAGE_BYTES="$(podman image inspect --format '{{.Size}}' "$SMOKE_IMAGE")"
  BASE_BYTES="$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")"
  log "built in ${BUILD_SECONDS} s: image $((IMAGE_BYTES / 1000000)) MB" \
    "(base $((BASE_BYTES / 1000000)) MB, app layers $(((IMAGE_BYTES - BASE_BYTES) / 1000000)) MB)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------
ensure_tools
write_containers_conf
python3 -c 'import psycopg' 2>/dev/null || {
  # The project's environment has psycopg; run the database steps with it.
  PYBIN="$(uv run --frozen python -c 'import sys; print(sys.executable)')"
  python3() { "$PYBIN" "$@"; }
}
podman --version >&2

ensure_base_image
build_image

log "checking the image's configuration"
[ "$(podman image inspect --format '{{.Config.User}}' "$SMOKE_IMAGE")" = "10001:10001" ] ||
  die "the image does not run as the non-root user 10001"
podman image inspect --format '{{json .Config.Healthcheck}}' "$SMOKE_IMAGE" | grep -q CMD-SHELL ||
  die "no CMD-SHELL HEALTHCHECK in the image"
podman image inspect --format '{{json .Config.Cmd}}' "$SMOKE_IMAGE" |
  grep -q '"serve","--host","0.0.0.0","--port","8000"' || die "unexpected CMD"

# Without a database URL the image (which has no embedded database) must refuse to start with
# one line naming the variable, exit status 2.
NOURL_CONTAINER="$CONTAINER-nourl"
STARTED_CONTAINERS+=("$NOURL_CONTAINER")
set +e
nourl_err="$(podman run --name "$NOURL_CONTAINER" --network host \
  -e BETTER_AUTH_SECRET=a-placeholder-of-more-than-32-bytes \
  "$SMOKE_IMAGE" tasks-api migrate 2>&1 >/dev/null | grep -v 'systemd connection')"

nourl_status="$(podman inspect --format '{{.State.ExitCode}}' "$NOURL_CONTAINER")"
set -e
podman rm --force "$NOURL_CONTAINER" >/dev/null 2> >(quiet_systemd)
[ "$nourl_status" = 2 ] && [ "$(printf '%s\n' "$nourl_err" | wc -l)" = 1 ] &&
  printf '%s' "$nourl_err" | grep -q 'DATABASE_URL' ||
  die "without DATABASE_URL: expected exit 2 and one line naming it, got $nourl_status: $nourl_err"
log "without DATABASE_URL: exit 2, '$nourl_err'"

pg_isready_py='import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()'
python3 -c "$pg_isready_py" "$SMOKE_ADMIN_URL" || die "PostgreSQL not reachable at $SMOKE_ADMIN_URL"
psql_admin "CREATE DATABASE \"$SMOKE_DB\""
DB_CREATED=1
DB_URL="$(python3 -c '
import sys
from urllib.parse import urlsplit, urlunsplit
p = urlsplit(sys.argv[1])
print(urlunsplit(p._replace(path="/" + sys.argv[2])))' "$SMOKE_ADMIN_URL" "$SMOKE_DB")"
log "database $SMOKE_DB created"

SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"

# Start a container ($1 name, $2 port, then extra `podman run` options up to `--`, then the
# command); --network host only, and the server listens on loopback only.
start_container() {
  local name=$1 port=$2
  shift 2
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  STARTED_CONTAINERS+=("$name")
  podman run --detach --name "$name" --network host \
    -e DATABASE_URL="$DB_URL" -e BETTER_AUTH_SECRET="$SECRET" -e PORT="$port" \
    "${opts[@]}" "$SMOKE_IMAGE" "$@" >/dev/null 2> >(quiet_systemd)
}

# Milliseconds from $2 (date +%s%N, taken just before `podman run`) to the first 200 from
# $1/ready; fails if the container stops first or nothing answers within 60 s.
wait_ready_ms() {
  python3 - "$1" "$2" "$3" <<'PY'
import subprocess, sys, time, urllib.error, urllib.request

base, start_ns, container = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(base + "/ready", timeout=2) as r:
            if r.status == 200:
                print((time.time_ns() - start_ns) // 1_000_000)
                sys.exit(0)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        pass
    state = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Running}}", container],
        capture_output=True, text=True,
    ).stdout.strip()
    if state != "true":
        print(f"{container} stopped before it was ready", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
print(f"{container}: not ready within 60 s", file=sys.stderr)
sys.exit(1)
PY
}

# ---- 1. the image as built: ready time, HTTP, non-root, HEALTHCHECK, graceful stop ----------
PORT="$(free_port)"
BASE_URL="http://127.0.0.1:$PORT"
log "starting $CONTAINER on 127.0.0.1:$PORT (--network host)"
START_NS="$(date +%s%N)"
# The image's command with the address changed (loopback, a free port); PORT is set too, so
# that the HEALTHCHECK probes the same port.
start_container "$CONTAINER" "$PORT" -- tasks-api serve --host 127.0.0.1 --port "$PORT"
READY_MS="$(wait_ready_ms "$BASE_URL" "$START_NS" "$CONTAINER")" || die "/ready never answered 200"
log "ready ${READY_MS} ms after container start (limit ${READY_LIMIT_SECONDS} s)"
[ "$READY_MS" -lt $((READY_LIMIT_SECONDS * 1000)) ] || die "SC-008: ready after ${READY_MS} ms"

log "checking the running container"
[ "$(podman exec "$CONTAINER" id -u)" = 10001 ] || die "the process does not run as uid 10001"
podman exec "$CONTAINER" test -f /app/sql/tasks.sql || die "sql/ missing from the image"
if podman exec "$CONTAINER" python3 -c 'import pgserver' 2>/dev/null; then
  die "pgserver (embedded dev database) should not be in the image"
fi
podman healthcheck run "$CONTAINER" >/dev/null || die "the image's HEALTHCHECK failed"
log "HEALTHCHECK (CMD-SHELL, urllib): healthy"

# A token minted inside the container, with the secret the server uses.
TOKEN="$(podman exec "$CONTAINER" tasks-api token smoke-user --ttl 300)"

python3 - "$BASE_URL" "$TOKEN" <<'PY' || die "HTTP checks failed"
import json, sys, urllib.error, urllib.request

base, token = sys.argv[1], sys.argv[2]


def call(method, path, body=None, auth=True):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect(what, got, want):
    print(f"  {what}: {got}", file=sys.stderr)
    if got != want:
        sys.exit(f"{what}: expected {want}, got {got}")


status, body = call("GET", "/health", auth=False)
expect("GET /health", status, 200)
status, body = call("GET", "/ready", auth=False)
expect("GET /ready", status, 200)
status, body = call("GET", "/api/smoke-user/tasks", auth=False)
expect("GET tasks without a token", status, 401)
status, body = call("POST", "/api/smoke-user/tasks", {"title": "  from the container  "})
expect("POST /api/smoke-user/tasks", status, 201)
expect("created title", body["title"], "from the container")
task_id = body["id"]
status, body = call("GET", "/api/smoke-user/tasks")
expect("GET /api/smoke-user/tasks", status, 200)
expect("listed ids", [t["id"] for t in body], [task_id])
status, body = call("GET", "/api/other-user/tasks")
expect("GET another user's tasks", status, 403)
PY

log "stopping (SIGTERM, graceful)"
STOP_STARTED=$SECONDS
podman stop --time 25 "$CONTAINER" >/dev/null 2> >(quiet_systemd)
EXIT_CODE="$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")"
log "stopped in $((SECONDS - STOP_STARTED)) s, exit code $EXIT_CODE"
[ "$EXIT_CODE" = 0 ] || die "the server did not exit cleanly on SIGTERM (exit $EXIT_CODE)"

# ---- 2. development mode as docker-compose.yml runs it: source bind-mounted over /app, --reload
# A copy of the source, so that the change made to trigger the reload touches no real file.
DEV_SRC="$WORK_DIR/src"
mkdir -p "$DEV_SRC"
cp -r api repositories observability sql pyproject.toml "$DEV_SRC/"
find "$DEV_SRC" -name __pycache__ -prune -exec rm -rf {} +
chmod -R a+rX "$DEV_SRC"
DEV_PORT="$(free_port)"
DEV_CONTAINER="$CONTAINER-dev"
log "starting $DEV_CONTAINER: source bind-mounted at /app, --reload, 127.0.0.1:$DEV_PORT"
DEV_START_NS="$(date +%s%N)"
start_container "$DEV_CONTAINER" "$DEV_PORT" \
  -v "$DEV_SRC:/app" -e WATCHFILES_FORCE_POLLING=true -- \
  tasks-api serve --host 127.0.0.1 --port "$DEV_PORT" --reload
DEV_READY_MS="$(wait_ready_ms "http://127.0.0.1:$DEV_PORT" "$DEV_START_NS" "$DEV_CONTAINER")" ||
  die "the development container never became ready"
log "dev container ready ${DEV_READY_MS} ms after start; changing api/app.py in the mount"
printf '\n# changed by the container smoke to trigger a reload\n' >>"$DEV_SRC/api/app.py"
reloaded=0
for _ in $(seq 1 100); do
  if podman logs "$DEV_CONTAINER" 2>&1 | grep -q 'detected changes'; then reloaded=1; break; fi
  sleep 0.2
done
[ "$reloaded" = 1 ] || die "--reload did not notice the change in the bind-mounted source"
wait_ready_ms "http://127.0.0.1:$DEV_PORT" "$(date +%s%N)" "$DEV_CONTAINER" >/dev/null ||
  die "not ready again after the reload"
log "reloaded on the change and ready again (FR-017)"
podman stop --time 10 "$DEV_CONTAINER" >/dev/null 2> >(quiet_systemd)

printf 'container-smoke: image %s size %s MB; build %s s; ready %s ms after start (< %s s)\n' \
  "$SMOKE_IMAGE" "$((IMAGE_BYTES / 1000000))" "$BUILD_SECONDS" "$READY_MS" "$READY_LIMIT_SECONDS"
