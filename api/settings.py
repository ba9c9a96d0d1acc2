"""Configuration from the environment (and `.env`), validated once at start-up."""

from __future__ import annotations

import sys
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Final, Self
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output, in bytes.
HMAC_MIN_SECRET_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_SECRET_BYTES: Final = HMAC_MIN_SECRET_BYTES["HS256"]
# RFC 7519 §4.1.4 allows "a few minutes" of leeway; more keeps expired tokens alive (Better
# Auth's last 15 minutes).
MAX_LEEWAY_SECONDS: Final = 300
# A body is read into memory whole before it is parsed: each concurrent request may hold this.
MAX_BODY_BYTES_LIMIT: Final = 1024 * 1024


def check_secret_length(secret: str) -> None:
    """Raise ValueError when `secret` (UTF-8) is shorter than RFC 7518 §3.2 allows for HS256.

    A `.env` line such as `BETTER_AUTH_SECRET=Xy7kq9 #Lm2p` (an unquoted ` #` starts a
    comment) silently leaves a 6-byte key: refusing it is the only safe answer.
    """
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes, got {size} (RFC 7518 section 3.2: an "
            "HMAC key at least as long as the hash output; HS384 needs 48, HS512 64)"
        )


class PreparedStatements(StrEnum):
    """DB_PREPARED_STATEMENTS (contract, "Configuration" and "Database faults").

    `auto`: prepare only on a connection the server confirms is direct (repositories/pool.py,
    `probe_route`); `on`: the same, but refuse to start (exit 2) when it is not; `off`: never.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class LogFormat(StrEnum):
    """LOG_FORMAT: one JSON object per line, or structlog's console renderer."""

    JSON = "json"
    CONSOLE = "console"


#: Values valid in form but unsafe above a bound: refused like a malformed one (exit 2, one
#: line). Field name -> (bound, the unit and why).
_UNSAFE_ABOVE: Final[dict[str, tuple[int, str]]] = {
    "jwt_leeway_seconds": (
        MAX_LEEWAY_SECONDS,
        "seconds (RFC 7519 section 4.1.4: a few minutes); more keeps expired tokens valid",
    ),
    "max_body_bytes": (MAX_BODY_BYTES_LIMIT, "bytes: a body is held in memory whole"),
}


#: Seconds DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT must reach: each request's database deadline
#: keeps repositories.pool.CANCEL_BUDGET (0.9 s) for cancelling a statement, and the rest
#: must leave room to wait for a connection and run one (red team: 0.5 + 0.3 answered every
#: request 500 on a healthy database).
MIN_DB_DEADLINE: Final = 1.5


class Settings(BaseSettings):
    """Every setting of the service, read once from the environment and `.env`.

    Field `x` is the variable `X` (case-insensitive); NEON_DB_URL wins over its alias
    DATABASE_URL. Names, meanings and defaults: contract, "Configuration". Units are in the
    names (`_seconds`, `_bytes`); `db_pool_timeout`, `db_startup_timeout`,
    `db_statement_timeout` and `jwks_fetch_timeout` are seconds too, `db_connect_timeout`
    whole seconds (libpq's connect_timeout). Constructing one raises
    pydantic.ValidationError for any invalid value; `load_settings` turns that into the
    one-line ConfigError.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEON_DB_URL", "DATABASE_URL")
    )
    better_auth_secret: SecretStr | None = None
    better_auth_url: str | None = None
    better_auth_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=3600)
    jwks_min_refresh_seconds: float = Field(default=5.0, ge=0.0, le=3600.0)
    jwks_fetch_timeout: float = Field(default=3.0, gt=0.0, le=60.0)

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://localhost"]
    )

    # Sized for Neon's pooled endpoint and a 2-core host; see README "Running on Neon".
    db_pool_min: int = Field(default=2, ge=0, le=1000)
    db_pool_max: int = Field(default=10, ge=1, le=1000)
    db_pool_timeout: float = Field(default=5.0, gt=0.0, le=300.0)
    db_connect_timeout: int = Field(default=5, ge=1, le=300)
    db_startup_timeout: float = Field(default=30.0, ge=0.0, le=3600.0)
    # `auto` prepares only on connections the server confirms are direct (no pooler); see
    # repositories/pool.py and README "Running on Neon". `on` refuses to start otherwise.
    db_prepared_statements: PreparedStatements = PreparedStatements.AUTO
    # Seconds one statement (the checkout check included) may run: contract, "Database faults".
    db_statement_timeout: float = Field(default=5.0, gt=0.0, le=3600.0)

    # Running many instances (README "Stopping: signals, drain and exit status"): seconds to
    # keep serving, /ready 503, after SIGTERM; and whether `serve` applies migrations.
    shutdown_drain_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    migrate_on_start: bool = True

    log_level: str = "INFO"
    log_format: LogFormat | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # HTTP server limits (api/http_server.py; contract, "HTTP semantics"). Per process.
    #: request line + headers, bytes; more is 431 (or a closed connection)
    http_max_head_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: header fields in one request head (Apache's LimitRequestFields default); more is 431
    http_max_headers: int = Field(default=100, ge=10, le=10_000)
    #: seconds from connect (or from the first byte after a keep-alive pause) to a full head
    http_head_timeout_seconds: float = Field(default=10.0, gt=0.0, le=600.0)
    #: seconds from the end of the head to the end of the body; later is 408 (api/body.py)
    http_body_timeout_seconds: float = Field(default=10.0, gt=0.0, le=600.0)
    #: seconds an idle keep-alive connection is kept open
    http_keep_alive_timeout_seconds: int = Field(default=5, ge=1, le=600)
    #: open connections per process; more are answered 503 + Retry-After and closed
    http_max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    #: requests in the app at once per process (api/admission.py); 0: twice DB_POOL_MAX
    max_concurrent_requests: int = Field(default=0, ge=0, le=100_000)
    #: seconds a request may wait for a slot; 0: DB_POOL_TIMEOUT
    admission_timeout_seconds: float = Field(default=0.0, ge=0.0, le=300.0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # CORS_ORIGINS is comma-separated (contract), not the JSON list pydantic-settings
        # expects of a list field (hence NoDecode above).
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        """Each entry is `*` or an origin as browsers send it (RFC 6454 §6.2:
        scheme://host[:port], no path): `http://localhost:3000/` would never match and refuse
        the real frontend without a word, so it is refused here instead."""
        for origin in value:
            if origin == "*":
                continue
            try:
                parts = urlsplit(origin)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                parts = None
            if (
                parts is None
                or parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path
                or parts.query
                or parts.fragment
                or parts.username is not None
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port] without a path or "
                    "trailing slash (e.g. http://localhost:3000), or *"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("better_auth_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        check_secret_length(value.get_secret_value())
        return value

    @field_validator("jwt_leeway_seconds", "max_body_bytes")
    @classmethod
    def _check_upper_bound(cls, value: int, info: ValidationInfo) -> int:
        limit, why = _UNSAFE_ABOVE[str(info.field_name)]
        if value > limit:
            raise ValueError(f"must be at most {limit} {why}")
        return value

    @field_validator("database_url", "better_auth_url", "better_auth_jwks_url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Blank is unset; NEON_DB_URL/DATABASE_URL must be postgresql://, the Better Auth
        URLs http(s):// with a host."""
        if value is None or value.strip() == "":
            return None
        parts = urlsplit(value.strip())
        if info.field_name == "database_url":
            if parts.scheme not in ("postgresql", "postgres"):
                raise ValueError("must be a postgresql:// URL")
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.strip()

    @model_validator(mode="after")
    def _check_pool_bounds(self) -> Self:
        """Every Settings, however built, has a pool that psycopg_pool can open, and a
        request deadline with room for a connection and a statement (MIN_DB_DEADLINE)."""
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        if self.db_pool_timeout + self.db_statement_timeout < MIN_DB_DEADLINE:
            raise ValueError(
                f"DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT must be at least {MIN_DB_DEADLINE:g} s:"
                " 0.9 s of it is kept for cancelling a statement at its deadline"
            )
        return self

    @property
    def jwks_url(self) -> str | None:
        """The JWKS to trust: BETTER_AUTH_JWKS_URL, else BETTER_AUTH_URL + `/api/auth/jwks`
        (where Better Auth's jwt plugin serves it; contract, "Configuration"), else None."""
        if self.better_auth_jwks_url:
            return self.better_auth_jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None

    @property
    def effective_max_concurrent_requests(self) -> int:
        """MAX_CONCURRENT_REQUESTS, or 2 * DB_POOL_MAX: enough to keep every connection busy
        while as many requests do their CPU work, few enough that none waits long for one."""
        return self.max_concurrent_requests or 2 * self.db_pool_max

    @property
    def effective_admission_timeout(self) -> float:
        """ADMISSION_TIMEOUT_SECONDS, or DB_POOL_TIMEOUT (the wait a request already accepts)."""
        return self.admission_timeout_seconds or self.db_pool_timeout

    @property
    def effective_log_format(self) -> LogFormat:
        """LOG_FORMAT, or `console` when stdout is a terminal and `json` otherwise (contract,
        "Configuration")."""
        if self.log_format is not None:
            return self.log_format
        return LogFormat.CONSOLE if sys.stdout.isatty() else LogFormat.JSON


class ConfigError(Exception):
    """A misconfiguration: one clear line naming the variable; the CLI exits 2."""


def load_settings() -> Settings:
    """Settings from the environment and `.env`, read now (not cached).

    Raises ConfigError with one line naming the first invalid variable (contract,
    "Configuration": a misconfiguration stops start-up with one clear line, exit 2).
    """
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a model validator: its message names the variables itself
            raise ConfigError(f"invalid configuration: {message}") from None
        loc = str(first["loc"][0]).upper()
        if loc in ("DATABASE_URL", "NEON_DB_URL"):
            loc = "NEON_DB_URL/DATABASE_URL"
        raise ConfigError(f"invalid configuration: {loc}: {message}") from None
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """`load_settings()` once per process (the app's default); raises its ConfigError."""
    return load_settings()


def check_auth_configured(settings: Settings) -> None:
    """Refuse to start (ConfigError) when no token could ever verify, or the secret is short.

    The length is checked here again because `model_copy(update=...)` (the CLI's embedded
    development secret) does not run the field validators.
    """
    if settings.better_auth_secret is None and settings.jwks_url is None:
        raise ConfigError(
            "invalid configuration: BETTER_AUTH_SECRET is required "
            "(or BETTER_AUTH_URL / BETTER_AUTH_JWKS_URL for Better Auth's JWKS)"
        )
    if settings.better_auth_secret is not None:
        try:
            check_secret_length(settings.better_auth_secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: BETTER_AUTH_SECRET: {exc}") from None
