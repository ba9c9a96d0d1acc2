"""The log stream's two formats, and the masking of anything that looks like a credential."""

from __future__ import annotations

import json

import pytest

from observability.logging import REDACTED, redact_secrets
from tests.support import make_token, run_python

PROGRAM = """
import logging, sys
import structlog
from observability.logging import configure_logging
configure_logging(level="INFO", fmt=sys.argv[1])
structlog.contextvars.bind_contextvars(request_id="fmt-1")
log = structlog.get_logger("tasks_api.test")
log.info("task_created", task_id=7)
logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "tasks-api", "refused")
logging.getLogger("uvicorn.access").info("127.0.0.1 - GET / 200")  # off: never shown
try:
    raise ValueError("kaboom")
except ValueError:
    log.exception("unhandled_error")
"""


def run(fmt: str) -> str:
    done = run_python(PROGRAM, fmt)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def test_json_format_is_one_object_per_line_for_structlog_and_stdlib() -> None:
    records = [json.loads(line) for line in run("json").splitlines()]
    assert [r["event"] for r in records] == [
        "task_created",
        "error connecting in 'tasks-api': refused",
        "unhandled_error",
    ]
    assert records[0]["task_id"] == 7 and records[0]["request_id"] == "fmt-1"
    assert records[1]["logger"] == "psycopg.pool" and records[1]["level"] == "warning"
    assert records[1]["request_id"] == "fmt-1"  # stdlib records get the request's context too
    assert "ValueError: kaboom" in records[2]["exception"]
    assert all({"timestamp", "level", "logger", "pid"} <= r.keys() for r in records)


def test_console_format_is_readable_text() -> None:
    out = run("console")
    lines = out.splitlines()
    assert any("task_created" in line and "task_id=7" in line for line in lines), out
    assert any("error connecting in 'tasks-api'" in line for line in lines), out
    assert "kaboom" in out and "127.0.0.1 - GET" not in out
    assert not any(line.startswith("{") for line in lines)


def test_credentials_are_masked_whatever_the_field() -> None:
    token = make_token("user-1")
    event = redact_secrets(
        None,
        "info",
        {
            "event": f"got Bearer {token} from client",
            "url": "postgresql://app:s3cret@db.example/tasks",
            "raw": f"header={token}",
            "authorization": "Basic dXNlcjpwYXNz",
            "task_id": 3,
        },
    )
    text = json.dumps(event)
    assert token not in text and "s3cret" not in text and "dXNlcjpwYXNz" not in text
    assert event["url"] == f"postgresql://app:{REDACTED}@db.example/tasks"
    assert event["authorization"] == REDACTED and event["task_id"] == 3


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("BEARER opaque-token-1", "opaque-token-1"),  # not a JWT, any case of the scheme
        ("auth: bearer opaque-token-2", "opaque-token-2"),
        ("redis://:pw-3@cache:6379", "pw-3"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
    ],
)
def test_each_credential_shape_is_masked_on_its_own(value: str, secret: str) -> None:
    """Every pattern still applies to a value that carries only its own shape (the quick
    pre-check in front of them must let each through)."""
    event = redact_secrets(None, "info", {"event": "x", "detail": value})
    assert secret not in event["detail"] and REDACTED in event["detail"]


def test_values_without_credentials_are_left_alone() -> None:
    fields = {"event": "request", "route": "/api/{user_id}/tasks", "method": "GET", "status": 200}
    assert redact_secrets(None, "info", dict(fields)) == fields


def test_credentials_inside_nested_fields_are_masked() -> None:
    """A field whose value is a dict, list or tuple (headers, a list of URLs) is masked inside
    as a string field is: by key (`authorization`…) and by shape (JWT, bearer, URL password)."""
    token = make_token("user-1")
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "headers": {"Authorization": f"Bearer {token}", "accept": "application/json"},
            "items": [token, {"url": "postgresql://app:s3cret@db/tasks"}],
            "pair": ("redis://:pw-9@cache:6379", 3),
        },
    )
    text = json.dumps(event)
    assert token not in text and "s3cret" not in text and "pw-9" not in text
    assert event["headers"] == {"Authorization": REDACTED, "accept": "application/json"}
    assert event["items"][1] == {"url": f"postgresql://app:{REDACTED}@db/tasks"}
    assert isinstance(event["pair"], tuple) and event["pair"][1] == 3


LEAKY_EXCEPTION = """
import sys
import structlog
from observability.logging import configure_logging
configure_logging(level="INFO", fmt=sys.argv[1])
log = structlog.get_logger("tasks_api.test")
secret_local = "Bearer {token}"
try:
    raise ValueError("refused {token} at postgresql://app:s3cret@db/tasks")
except ValueError as exc:
    log.error("unhandled_error", exc_info=exc)
"""


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_credentials_in_a_logged_exception_are_masked_in_both_formats(fmt: str) -> None:
    """An exception's message (and, in a pretty traceback, its frames' locals) is output too:
    LOG_FORMAT=console masks it as json does."""
    token = make_token("user-1")
    done = run_python(LEAKY_EXCEPTION.replace("{token}", token), fmt)
    assert done.returncode == 0, done.stderr
    assert "unhandled_error" in done.stdout and "ValueError" in done.stdout
    assert token not in done.stdout and token[:40] not in done.stdout
    assert "s3cret" not in done.stdout
