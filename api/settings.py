"""Configuration from the environment (and `.env`), validated once at start-up."""

from __future__ import annotations

import sys
from enum import StrEnum
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class PreparedStatements(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class Settings(BaseSettings):
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
    db_prepared_statements: PreparedStatements = PreparedStatements.AUTO

    # Running many instances (README "Stopping: signals, drain and exit status"): seconds to
    # keep serving, /ready 503, after SIGTERM; and whether `serve` applies migrations.
    shutdown_drain_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    migrate_on_start: bool = True

    log_level: str = "INFO"
    log_format: LogFormat | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value.strip()

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
        return value

    @property
    def jwks_url(self) -> str | None:
        if self.better_auth_jwks_url:
            return self.better_auth_jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None

    @property
    def uses_pooler(self) -> bool:
        """A Neon `-pooler` host or PgBouncer's customary port means transaction pooling."""
        if not self.database_url:
            return False
        parts = urlsplit(self.database_url)
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        return "-pooler" in host or port == 6432

    @property
    def prepare_threshold(self) -> int | None:
        """psycopg's prepare_threshold: None disables server-side prepared statements."""
        if self.db_prepared_statements is PreparedStatements.OFF:
            return None
        if self.db_prepared_statements is PreparedStatements.AUTO and self.uses_pooler:
            return None
        return 5

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.CONSOLE if sys.stdout.isatty() else LogFormat.JSON


class ConfigError(Exception):
    """A misconfiguration: one clear line naming the variable; the CLI exits 2."""


def load_settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = str(first["loc"][0]).upper() if first["loc"] else "SETTINGS"
        if loc in ("DATABASE_URL", "NEON_DB_URL"):
            loc = "NEON_DB_URL/DATABASE_URL"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid configuration: {loc}: {message}") from None
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError("invalid configuration: DB_POOL_MIN must not exceed DB_POOL_MAX")
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def check_auth_configured(settings: Settings) -> None:
    """Without a secret or a JWKS no token could ever verify: refuse to start."""
    if settings.better_auth_secret is None and settings.jwks_url is None:
        raise ConfigError(
            "invalid configuration: BETTER_AUTH_SECRET is required "
            "(or BETTER_AUTH_URL / BETTER_AUTH_JWKS_URL for Better Auth's JWKS)"
        )
