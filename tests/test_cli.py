"""The tasks-api command: token, migrate, misconfiguration, and the embedded development default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from repositories.migrations import discover
from repositories.service import SERVICE_Q
from tests.support import ROOT, SECRET, free_port, stop_process, wait_http

_CONFIG_VARS = (
    "NEON_DB_URL",
    "DATABASE_URL",
    "BETTER_AUTH_SECRET",
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
)


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
    env.update({"TASKS_API_DATA_DIR": str(tmp_path / ".data"), "LOG_FORMAT": "json", **values})
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # cwd is a scratch directory so that a developer's own .env is never read.
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=tmp_path,
        env={**_env(tmp_path, **env), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_token_prints_an_hs256_token_that_verifies(tmp_path: Path) -> None:
    result = _cli(
        tmp_path,
        "token",
        "alice",
        "--ttl",
        "120",
        "--name",
        "Alice",
        "--email",
        "a@x.io",
        BETTER_AUTH_SECRET=SECRET,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["name"] == "Alice" and claims["email"] == "a@x.io"
    assert 110 <= claims["exp"] - claims["iat"] <= 120


def test_migrate_twice_is_a_no_op(tmp_path: Path, empty_database: str) -> None:
    first = _cli(tmp_path, "migrate", DATABASE_URL=empty_database, BETTER_AUTH_SECRET=SECRET)
    assert first.returncode == 0, first.stderr
    versions = ", ".join(str(m.version) for m in discover())
    assert first.stdout.strip().splitlines()[-1] == f"applied: {versions}"
    second = _cli(tmp_path, "migrate", DATABASE_URL=empty_database, BETTER_AUTH_SECRET=SECRET)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == "schema is up to date"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://x@localhost/db", "BETTER_AUTH_SECRET": SECRET}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}, "BETTER_AUTH_SECRET"),
        (
            {
                "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
                "BETTER_AUTH_SECRET": SECRET,
                "DB_PREPARED_STATEMENTS": "sometimes",
            },
            "DB_PREPARED_STATEMENTS",
        ),
        (
            {
                "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
                "BETTER_AUTH_SECRET": SECRET,
                "DB_POOL_MAX": "many",
            },
            "DB_POOL_MAX",
        ),
        (
            {
                "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
                "BETTER_AUTH_SECRET": SECRET,
                "LOG_FORMAT": "xml",
            },
            "LOG_FORMAT",
        ),
    ],
    ids=["bad url", "missing secret", "prepared statements", "pool max", "log format"],
)
def test_misconfiguration_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = _cli(tmp_path, "migrate", **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


def test_serve_without_a_database_url_starts_the_embedded_postgres(tmp_path: Path) -> None:
    """The README's first command: no configuration at all, and the service answers /ready."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env={**_env(tmp_path), "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(base + "/ready", timeout=90, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            log.flush()
            tail = (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n{tail}") from None
        ready = httpx.get(base + "/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        # The dev secret is kept beside the data, so `token` and `serve` agree.
        assert (tmp_path / ".data" / "dev-secret").exists()
        token = _cli(tmp_path, "token", "dev-user").stdout.strip()
        created = httpx.post(
            base + "/api/dev-user/tasks",
            json={"title": "embedded"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
    finally:
        stop_process(proc)
        log.close()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert "embedded development PostgreSQL" in output and "development only" in output


# --- RFC 7518 §3.2: an HMAC secret at least as long as the hash output ---------------------


def _one_config_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("size", [6, 31])
def test_a_secret_shorter_than_32_bytes_refuses_to_start(tmp_path: Path, size: int) -> None:
    for command in (("token", "alice"), ("migrate",)):
        result = _cli(
            tmp_path,
            *command,
            DATABASE_URL="postgresql://postgres@127.0.0.1:1/never-reached",
            DB_STARTUP_TIMEOUT="1",
            BETTER_AUTH_SECRET="k" * size,
        )
        line = _one_config_line(result)
        assert "BETTER_AUTH_SECRET" in line and "RFC 7518" in line and "32 bytes" in line, line
        assert "k" * size not in line  # the secret itself is never echoed


def test_a_secret_of_32_bytes_is_accepted(tmp_path: Path) -> None:
    result = _cli(tmp_path, "token", "alice", BETTER_AUTH_SECRET="k" * 32)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), "k" * 32, algorithms=["HS256"])["sub"] == "alice"


def test_a_dotenv_comment_that_cuts_the_secret_short_refuses_to_start(tmp_path: Path) -> None:
    """The seen case: an unquoted ` #` in `.env` starts a comment and leaves a 6-byte key."""
    (tmp_path / ".env").write_text("BETTER_AUTH_SECRET=Xy7kq9 #Lm2pQr8sTu3vWx4yZa5bCd6eFg7h\n")
    line = _one_config_line(_cli(tmp_path, "token", "alice"))
    assert "BETTER_AUTH_SECRET" in line and "got 6" in line, line


def test_the_embedded_dev_secret_is_long_enough_and_a_short_one_is_refused(
    tmp_path: Path,
) -> None:
    made = _cli(tmp_path, "token", "alice")
    assert made.returncode == 0, made.stderr
    generated = (tmp_path / ".data" / "dev-secret").read_text().strip()
    assert len(generated.encode()) >= 64  # enough for HS512 as well
    (tmp_path / ".data" / "dev-secret").write_text("short")
    line = _one_config_line(_cli(tmp_path, "token", "alice"))
    assert "BETTER_AUTH_SECRET" in line and "RFC 7518" in line, line


# --- a pool the server could never fill (issue 17: settings valid in form but unsafe) --------


def _connection_slots(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(SERVICE_Q["connection_slots"]).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_pool_larger_than_the_server_allows_refuses_to_start(
    tmp_path: Path, database_url: str, workers: int
) -> None:
    """DB_POOL_MAX x workers above max_connections (less the reserved slots) on a direct
    connection: exit 2 naming DB_POOL_MAX, not 500s once traffic peaks."""
    pool_max = _connection_slots(database_url) // workers + 1
    result = _cli(
        tmp_path,
        "serve",
        "--port",
        "1",
        "--workers",
        str(workers),
        DATABASE_URL=database_url,
        BETTER_AUTH_SECRET=SECRET,
        DB_POOL_MAX=str(pool_max),
        DB_STARTUP_TIMEOUT="10",
    )
    line = _one_config_line(result)
    assert "DB_POOL_MAX" in line and "max_connections" in line, line
    assert str(pool_max * workers) in line, line


# --- command-line values out of range are refused, never silently changed (red team) --------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("serve", "--port", "70000"), {}, "--port"),  # was served on 70000 - 65536 = 4464
        (("serve", "--port", "-1"), {}, "--port"),  # 0 is allowed: the system picks one
        (("serve",), {"PORT": "abc"}, "--port"),  # was a traceback
        (("serve", "--workers", "0"), {}, "--workers"),
        (("serve", "--workers", "-1"), {}, "--workers"),
        (("serve", "--graceful-timeout", "-1"), {}, "--graceful-timeout"),
        (("token", "alice", "--ttl", "0"), {}, "--ttl"),  # an already expired token
        (("token", "alice", "--ttl", "-5"), {}, "--ttl"),
        (("token", ""), {}, "SUB"),  # tokens the server would refuse with 401
        (("token", "a" * 256), {}, "SUB"),
        (("token", "bad\x01sub"), {}, "SUB"),
    ],
)
def test_out_of_range_command_line_values_exit_2_naming_them(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = _cli(
        tmp_path,
        *args,
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/never-reached",
        DB_STARTUP_TIMEOUT="1",
        BETTER_AUTH_SECRET=SECRET,
        **env,
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert named in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_exits_3_with_one_line_on_stderr(tmp_path: Path, database_url: str) -> None:
    """Every other start-up failure says why on stderr; this one did not (red team)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            tmp_path,
            "serve",
            "--port",
            str(port),
            DATABASE_URL=database_url,
            BETTER_AUTH_SECRET=SECRET,
            DB_STARTUP_TIMEOUT="10",
        )
    assert result.returncode == 3, (result.stdout[-2000:], result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], result.stderr
