# syntax=docker/dockerfile:1
# The Tasks API image: dependencies from the committed uv.lock, run as a non-root user.
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module: the official
# python:*-slim by default, or a local base made with debootstrap where nothing can be pulled
# (scripts/container-smoke.sh). Both stages use it, so the virtual environment's interpreter
# path is the same in the builder and at run time.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder

# uv from PyPI into its own venv: works on the official image and on Debian's python3,
# which has no pip. The version matches the one that wrote uv.lock.
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_NO_CACHE=1

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. --no-dev also leaves out
# pgserver, the embedded development database (the `embedded` extra, pulled in only by the
# dev group): in a container a DATABASE_URL is always given.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project

COPY README.md ./
COPY api ./api
COPY repositories ./repositories
COPY observability ./observability
COPY sql ./sql
# The project itself, editable: /opt/venv points at /app, so sql/ is found beside the code
# and a bind mount of the source over /app (docker-compose.yml, --reload) is what runs.
RUN /opt/uv/bin/uv sync --frozen --no-dev


FROM ${BASE_IMAGE} AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    PORT=8000

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

USER 10001:10001
EXPOSE 8000

# CMD-SHELL form on purpose (hadolint reads it as DL3025): the shell expands $PORT, set when
# the command's --port is changed, and maps any failure to 1. Python's urllib: no curl needed.
# hadolint ignore=DL3025
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:${PORT:-8000}/health', timeout=4).status != 200)" || exit 1

CMD ["tasks-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
