"""The `tasks-api` command: serve, migrate, token."""

from __future__ import annotations

# isort: off
from api import early_signals  # first, before the slow imports: see its docstring

# isort: on
import argparse
import asyncio
import importlib.util
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import jwt
import structlog
import uvicorn

from api.auth import MAX_SUB_LENGTH, AuthError, valid_sub
from api.lifecycle import StopRequested, exit_now, install_stop_handlers, serve
from api.settings import ConfigError, Settings, check_auth_configured, load_settings
from observability.logging import configure_logging
from repositories.database import DatabaseConfigError, prepare_database
from repositories.errors import DatabaseUnavailable, MigrationError

log = structlog.get_logger("tasks_api.cli")

DATA_DIR: Final = Path(os.environ.get("TASKS_API_DATA_DIR", ".data"))
EXIT_CONFIG: Final = 2


def _fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """Print one line `tasks-api: <message>` on stderr and exit with `code` (2: configuration)."""
    print(f"tasks-api: {message}", file=sys.stderr)
    raise SystemExit(code)


def _embedded_secret() -> str:
    """Generated once and kept beside the embedded data, so `token` and `serve` agree.

    48 random bytes, 64 URL-safe characters: above the 32 bytes RFC 7518 §3.2 asks of an
    HS256 key, and long enough for HS512 too. A shorter file (edited by hand) is refused by
    `check_auth_configured` like a short BETTER_AUTH_SECRET.
    """
    path = DATA_DIR / "dev-secret"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def _start_embedded_database() -> str:
    """A real PostgreSQL from the `pgserver` package, under DATA_DIR (development only)."""
    import logging
    import warnings

    # pgserver logs every pg_ctl/psql command at INFO, and platformdirs warns at every start
    # when XDG_RUNTIME_DIR is unset (containers, CI): neither is news to a developer.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            str((DATA_DIR / "pg").resolve()), cleanup_mode="stop"
        )
    server.psql("SELECT 1;")
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'tasks';")
    if "1 row" not in exists:
        server.psql("CREATE DATABASE tasks;")
    uri: str = server.get_uri("tasks")
    return uri


def resolve_settings(*, start_embedded: bool = True) -> Settings:
    """Settings with the embedded development defaults filled in where nothing is configured."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    updates: dict[str, Any] = {}
    if settings.database_url is None:
        if start_embedded and importlib.util.find_spec("pgserver") is None:
            # A container image leaves the embedded database out: say what is missing.
            _fail(
                "invalid configuration: NEON_DB_URL/DATABASE_URL is required (the embedded "
                "development database, pgserver, is not installed here)"
            )
        if settings.better_auth_secret is None:
            from pydantic import SecretStr

            updates["better_auth_secret"] = SecretStr(_embedded_secret())
        if start_embedded:
            secret_note = (
                f"; tokens are signed with the generated secret in {DATA_DIR}/dev-secret"
                if "better_auth_secret" in updates
                else ""
            )
            print(
                "tasks-api: WARNING: no NEON_DB_URL/DATABASE_URL: starting the embedded "
                f"development PostgreSQL under {DATA_DIR}/{secret_note} (development only)",
                file=sys.stderr,
            )
            updates["database_url"] = _start_embedded_database()
    settings = settings.model_copy(update=updates)
    try:
        check_auth_configured(settings)
    except ConfigError as exc:
        _fail(str(exc))
    return settings


def _prepare(
    settings: Settings, *, apply_migrations: bool = True, pool_connections: int | None = None
) -> list[int]:
    """Wait for the database (DB_STARTUP_TIMEOUT) and migrate; exits 2/1 on failure.
    `pool_connections`: what every worker's pool together may open (checked against the
    server's max_connections on a direct connection)."""
    assert settings.database_url is not None
    try:
        return asyncio.run(
            prepare_database(
                settings.database_url,
                startup_timeout=settings.db_startup_timeout,
                connect_timeout=settings.db_connect_timeout,
                prepared_statements=settings.db_prepared_statements,
                statement_timeout=settings.db_statement_timeout,
                apply_migrations=apply_migrations,
                pool_connections=pool_connections,
            )
        )
    except DatabaseConfigError as exc:
        _fail(f"cannot use the database (NEON_DB_URL/DATABASE_URL): {exc}")
    except DatabaseUnavailable as exc:
        _fail(str(exc), code=1)
    except MigrationError as exc:
        _fail(f"migration failed: {exc}", code=1)


def uvicorn_config(args: argparse.Namespace, settings: Settings) -> uvicorn.Config:
    """The one place where uvicorn's settings are built for `serve` (from the command line
    and the resolved settings); `api.lifecycle.serve` runs it."""
    return uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        reload=args.reload,
        reload_dirs=["api", "repositories", "observability", "sql"] if args.reload else None,
        loop="uvloop",
        # httptools with a bounded head, a head deadline and a connection limit (api/http_server.py)
        http="api.http_server:BoundedHttpToolsProtocol",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,  # "Server: uvicorn" tells a scanner what to try, a client nothing
        timeout_graceful_shutdown=int(args.graceful_timeout),
        timeout_keep_alive=settings.http_keep_alive_timeout_seconds,
        # uvicorn kills a worker that does not answer its supervisor within this; the default
        # (5 s) is shorter than a spawned worker's imports on a busy host: a restart loop.
        timeout_worker_healthcheck=30,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    """`tasks-api serve`: wait for the database and migrate once for every worker, then run
    uvicorn with the drain (`api.lifecycle.serve`) and exit 0 when it stops.

    Exits 2 on a configuration error (the database's refusal included), 1 when the database
    stays unreachable for DB_STARTUP_TIMEOUT seconds or a migration fails, 3 when the server
    fails to start (without `--workers`/`--reload`: uvicorn's STARTUP_FAILURE).
    """
    settings = resolve_settings()
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format.value)
    migrate_here = settings.migrate_on_start and not args.no_migrate
    # Once for the whole process tree: the workers' lifespans neither wait nor migrate.
    _prepare(
        settings,
        apply_migrations=migrate_here,
        pool_connections=settings.db_pool_max * max(args.workers, 1),
    )
    if not migrate_here:
        log.info("migrations_skipped", reason="--no-migrate or MIGRATE_ON_START=false")
    # Workers (and the reloader) build their own app from the environment: hand them what
    # was resolved here (the embedded URL and secret) through it.
    assert settings.database_url is not None
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ.pop("NEON_DB_URL", None)
    os.environ["MIGRATE_ON_START"] = "false"
    if settings.better_auth_secret is not None:
        os.environ["BETTER_AUTH_SECRET"] = settings.better_auth_secret.get_secret_value()
    from observability.multiprocess import prepare_multiprocess_dir

    prepare_multiprocess_dir(args.workers)
    try:
        serve(uvicorn_config(args, settings), drain_seconds=settings.shutdown_drain_seconds)
    except SystemExit as exc:
        if exc.code == 3:  # uvicorn's STARTUP_FAILURE: its reason is in the log on stdout
            print(
                f"tasks-api: the server could not start on {args.host}:{args.port} (address "
                "in use, or not an address of this host); see the log for the cause",
                file=sys.stderr,
            )
        raise
    exit_now(0)  # stopped as asked: see lifecycle.exit_now


def cmd_migrate(_: argparse.Namespace) -> None:
    """Wait for the database and apply pending migrations (a Kubernetes Job, an init step)."""
    settings = resolve_settings()
    configure_logging(level=settings.log_level, fmt=settings.effective_log_format.value)
    applied = _prepare(settings)
    print(f"applied: {', '.join(map(str, applied))}" if applied else "schema is up to date")


def cmd_token(args: argparse.Namespace) -> None:
    """`tasks-api token SUB`: print an HS256 JWT signed with BETTER_AUTH_SECRET (contract,
    "Command line"), valid `--ttl` seconds from now, with JWT_ISSUER/JWT_AUDIENCE as
    `iss`/`aud` when set. Never starts the embedded database; with no database URL it signs
    with the generated development secret. Exits 2 when there is no secret to sign with."""
    settings = resolve_settings(start_embedded=False)
    if settings.better_auth_secret is None:
        _fail("invalid configuration: BETTER_AUTH_SECRET is required to sign a token")
    try:
        sub = valid_sub(args.sub)  # the server's own rule: never print a token it refuses
    except AuthError:
        _fail(
            f"invalid SUB: 1-{MAX_SUB_LENGTH} characters without control characters "
            "(the server refuses any other sub with 401)"
        )
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + args.ttl}
    if args.name:
        claims["name"] = args.name
    if args.email:
        claims["email"] = args.email
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    print(jwt.encode(claims, settings.better_auth_secret.get_secret_value(), algorithm="HS256"))


_N = TypeVar("_N", int, float)


def _in_range(kind: type[_N], low: _N, high: _N) -> Callable[[str], _N]:
    """An argparse type: a `kind` (int, or float seconds) in [low, high]. PORT,
    WEB_CONCURRENCY and the flags are checked like the settings: a value out of range exits
    2 naming it, never runs (`--port 70000` was served on 70000 - 65536)."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} is not between {low:g} and {high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of contract, "Command line" (plus `--graceful-timeout` and
    `--no-migrate`); HOST, PORT and WEB_CONCURRENCY give the defaults of `serve`."""
    parser = argparse.ArgumentParser(prog="tasks-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument(
        "--port", type=_in_range(int, 0, 65535), default=os.environ.get("PORT", "8000")
    )
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.add_argument(
        "--workers", type=_in_range(int, 1, 512), default=os.environ.get("WEB_CONCURRENCY", "1")
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_in_range(float, 0.0, 3600.0),
        default=20.0,
        help="seconds to finish in-flight requests after the drain (default 20)",
    )
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply migrations (run `tasks-api migrate` first); same as "
        "MIGRATE_ON_START=false. /ready answers 503 while the schema is behind.",
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply pending migrations and exit")
    migrate.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="print an HS256 token for development and tests")
    token.add_argument("sub", help="the user id (the token's sub)")
    token.add_argument(
        "--ttl", type=_in_range(int, 1, 366 * 86400), default=3600, help="lifetime in seconds"
    )
    token.add_argument("--name")
    token.add_argument("--email")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one command. Exit status: 0 done or stopped by SIGTERM/SIGINT (`serve`); 1 the
    database is unreachable or a migration failed; 2 invalid configuration; 3 the server
    failed to start (uvicorn); `migrate` stopped by a signal: 128 + the signal (143, 130),
    as the schema may not be current (README "Stopping: signals, drain and exit status")."""
    argv = sys.argv[1:] if argv is None else argv
    install_stop_handlers()  # from here a stop signal raises StopRequested
    try:
        if (early := early_signals.received()) is not None:
            raise StopRequested(early)  # arrived while the modules were importing
        args = build_parser().parse_args(argv)
        args.func(args)
    except StopRequested as stop:
        status = 128 + stop.signum if argv[:1] == ["migrate"] else 0
        log.info("stopped_before_serving", signal=str(stop), exit_status=status)
        raise SystemExit(status) from None


if __name__ == "__main__":
    main()
