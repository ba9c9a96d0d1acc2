"""Configuration rules of the contract: defaults, validation, derived values."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from api.settings import (
    ConfigError,
    PreparedStatements,
    Settings,
    check_auth_configured,
    load_settings,
)


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


def test_a_database_deadline_too_short_to_cancel_in_is_refused() -> None:
    """0.9 s of DB_POOL_TIMEOUT + DB_STATEMENT_TIMEOUT is kept for cancelling; a sum under
    MIN_DB_DEADLINE left nothing to wait for a connection in (every request a 500)."""
    from api.settings import MIN_DB_DEADLINE
    from repositories.pool import CANCEL_BUDGET

    assert MIN_DB_DEADLINE > CANCEL_BUDGET + 0.5
    with pytest.raises(ValueError, match="DB_POOL_TIMEOUT \\+ DB_STATEMENT_TIMEOUT"):
        _settings(db_pool_timeout="0.5", db_statement_timeout="0.3")
    assert _settings(db_pool_timeout="1", db_statement_timeout="0.5").db_pool_timeout == 1.0


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


# --- values valid in form but unsafe: refused like malformed ones ---------------------------


@pytest.mark.parametrize(
    ("secret", "accepted"),
    [
        ("k" * 6, False),
        ("k" * 31, False),
        ("k" * 32, True),
        ("\u00e9" * 15, False),  # 15 characters, 30 bytes: bytes are what counts
        ("\u00e9" * 16, True),  # 16 characters, 32 bytes
    ],
    ids=["6 bytes", "31 bytes", "32 bytes", "30 bytes in 15 chars", "32 bytes in 16 chars"],
)
def test_the_secret_must_be_at_least_32_bytes(secret: str, accepted: bool) -> None:
    """RFC 7518 section 3.2: an HS256 key at least as long as the hash output (32 bytes)."""
    if accepted:
        assert _settings(better_auth_secret=secret).better_auth_secret is not None
        return
    with pytest.raises(ValidationError, match="at least 32 bytes") as caught:
        _settings(better_auth_secret=secret)
    assert caught.value.errors()[0]["loc"] == ("better_auth_secret",)


def test_a_short_secret_set_after_validation_is_still_refused() -> None:
    """model_copy(update=...) skips validators: check_auth_configured checks the length again."""
    settings = _settings(better_auth_url="http://localhost:3000")
    short = settings.model_copy(update={"better_auth_secret": SecretStr("k" * 31)})
    with pytest.raises(ConfigError, match="BETTER_AUTH_SECRET: must be at least 32 bytes"):
        check_auth_configured(short)


def test_pool_min_above_max_is_refused_by_every_settings() -> None:
    with pytest.raises(ValidationError, match="DB_POOL_MIN must not exceed DB_POOL_MAX"):
        _settings(db_pool_min=5, db_pool_max=4)
    assert _settings(db_pool_min=4, db_pool_max=4).db_pool_max == 4


def test_load_settings_names_the_pool_bounds_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MIN", "11")
    monkeypatch.setenv("DB_POOL_MAX", "10")
    monkeypatch.chdir("/")  # no .env
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "invalid configuration: DB_POOL_MIN must not exceed DB_POOL_MAX"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jwt_leeway_seconds": 301}, "at most 300 seconds"),
        ({"max_body_bytes": 1024 * 1024 + 1}, "at most 1048576 bytes"),
        ({"better_auth_url": "localhost:3000"}, "http:// or https://"),
        ({"better_auth_jwks_url": "file:///etc/keys.json"}, "http:// or https://"),
        ({"better_auth_url": "http://"}, "with a host"),
    ],
    ids=["leeway", "body limit", "auth url without scheme", "jwks file url", "url without host"],
)
def test_unsafe_values_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(**values)


def test_the_limits_themselves_are_accepted() -> None:
    settings = _settings(
        jwt_leeway_seconds=300,
        max_body_bytes=1024 * 1024,
        better_auth_url="https://auth.example.com",
        better_auth_jwks_url="http://127.0.0.1:3000/api/auth/jwks",
    )
    assert settings.jwt_leeway_seconds == 300
    assert settings.jwks_url == "http://127.0.0.1:3000/api/auth/jwks"


# Found by the red team: a trailing slash never matches a browser's Origin, silently.
@pytest.mark.parametrize(
    "origins", ["not a url", "http://localhost:3000/", "ftp://x", "http://a:99999", "http://"]
)
def test_cors_origins_that_no_browser_sends_are_refused(origins: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        _settings(cors_origins=origins)


def test_cors_origins_accept_origins_and_the_wildcard() -> None:
    value = "http://localhost:3000, https://app.example.com:8443"
    assert _settings(cors_origins=value).cors_origins == [
        "http://localhost:3000",
        "https://app.example.com:8443",
    ]
    assert _settings(cors_origins="*").cors_origins == ["*"]
