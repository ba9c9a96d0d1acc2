"""Configuration rules of the contract: defaults, validation, derived values."""

from __future__ import annotations

import pytest

from api.settings import ConfigError, PreparedStatements, Settings, check_auth_configured


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read the environment: start each from none of the service's variables."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("NEON_DB_URL", raising=False)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@ep-cool-123-pooler.eu-central-1.aws.neon.tech/db",
        "postgresql://u@127.0.0.1:6432/db",
        "postgresql://u@127.0.0.1:5432/db",
    ],
)
def test_no_setting_is_derived_from_the_host_or_port(url: str) -> None:
    """Whether to prepare is decided per connection by what the server reports
    (repositories/pool.py `probe_route`), never by a host name or port."""
    settings = _settings(database_url=url)
    assert settings.db_prepared_statements is PreparedStatements.AUTO
    assert not hasattr(settings, "uses_pooler")


def test_statement_timeout_is_seconds_and_positive() -> None:
    assert _settings().db_statement_timeout == 5.0
    assert _settings(db_statement_timeout="0.5").db_statement_timeout == 0.5
    with pytest.raises(ValueError):
        _settings(db_statement_timeout="0")


def test_defaults_match_the_contract() -> None:
    settings = _settings()
    assert settings.cors_origins == ["http://localhost:3000", "http://localhost"]
    assert settings.jwt_leeway_seconds == 30
    assert settings.db_prepared_statements is PreparedStatements.AUTO
    assert settings.log_level == "INFO"
    assert settings.max_body_bytes == 64 * 1024
    assert settings.jwks_url is None


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:3000 ,")
    assert Settings(_env_file=None).cors_origins == [  # type: ignore[call-arg]
        "https://app.example.com",
        "http://localhost:3000",
    ]


def test_database_url_alias_and_neon_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@h/db1")
    assert Settings(_env_file=None).database_url == "postgresql://a@h/db1"  # type: ignore[call-arg]
    monkeypatch.setenv("NEON_DB_URL", "postgresql://b@h/db2")
    assert Settings(_env_file=None).database_url == "postgresql://b@h/db2"  # type: ignore[call-arg]


def test_jwks_url_is_derived_from_better_auth_url() -> None:
    assert (
        _settings(better_auth_url="http://localhost:3000/").jwks_url
        == "http://localhost:3000/api/auth/jwks"
    )
    explicit = _settings(better_auth_url="http://a", better_auth_jwks_url="http://b/keys")
    assert explicit.jwks_url == "http://b/keys"


def test_a_secret_or_a_jwks_is_required() -> None:
    with pytest.raises(ConfigError, match="BETTER_AUTH_SECRET"):
        check_auth_configured(_settings(database_url="postgresql://u@h/db"))
    check_auth_configured(_settings(better_auth_secret="s" * 32))
    check_auth_configured(_settings(better_auth_url="http://localhost:3000"))
    # An empty secret is no secret.
    with pytest.raises(ConfigError):
        check_auth_configured(_settings(better_auth_secret=""))
