"""The access line on structlog's native path (observability/logging.py): the same line, in the
same stream, as the stdlib path wrote; the format and level LOG_FORMAT and LOG_LEVEL ask; a
flush per line; a broken stdout never failing a request."""

from __future__ import annotations

import json
import os
import re

from tests.support import make_token, run_python

# Key order is what the stdlib path (ProcessorFormatter) wrote before: the call's fields,
# then `event`, the context (in the contextvars' own order), then the shared chain's keys.
CALL_KEYS = ["method", "route", "status", "duration_ms", "user_id", "event"]
CONTEXT_KEYS = {"request_id", "token", "db"}
CHAIN_KEYS = ["level", "pid", "logger", "timestamp"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

PROGRAM = """
import logging, os, sys
import structlog
from observability.logging import configure_logging
from observability.middleware import RequestContextMiddleware

class Route:
    path = "/api/{user_id}/tasks/{task_id}"

def access(user_id):
    scope = {"method": "GET", "route": Route(), "state": {"user_id": user_id}}
    RequestContextMiddleware._access_line(scope, 200, 0.001234)

configure_logging(level=sys.argv[2], fmt=sys.argv[1])
structlog.contextvars.bind_contextvars(
    request_id="req-1", token=sys.argv[3], db="postgresql://app:s3cret@db/tasks"
)
access("user-1")
logging.getLogger("uvicorn.error").warning("between")  # the stdlib path, same stream
access("user-2")
if len(sys.argv) > 4:  # then reconfigured in the same process: loggers already used follow
    configure_logging(level=sys.argv[5], fmt=sys.argv[4])
    access("user-3")
os._exit(0)  # no flush at exit: every line must already be out (a crash loses none)
"""


def run(*args: str) -> str:
    # Block-buffered stdout (a pipe, as under a container's log collector): only the flush
    # after every line gets the last one out before os._exit.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = run_python(PROGRAM, *args, env=env)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout


def test_access_line_shape_order_and_redaction_on_the_native_path() -> None:
    token = make_token("user-1")
    lines = run("json", "INFO", token).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["request", "between", "request"]
    first = records[0]
    keys = list(first)
    assert keys[:6] == CALL_KEYS and set(keys[6:9]) == CONTEXT_KEYS, first
    assert keys[9:] == CHAIN_KEYS, first
    assert {k: v for k, v in first.items() if k not in ("pid", "timestamp")} == {
        "method": "GET",
        "route": "/api/{user_id}/tasks/{task_id}",
        "status": 200,
        "duration_ms": 1.23,
        "user_id": "user-1",
        "event": "request",
        "request_id": "req-1",
        "token": "[redacted]",
        "db": "postgresql://app:[redacted]@db/tasks",
        "level": "info",
        "logger": "tasks_api.access",
    }
    assert isinstance(first["pid"], int) and TIMESTAMP.fullmatch(first["timestamp"]), first
    assert token not in "\n".join(lines) and "s3cret" not in "\n".join(lines)
    # The stdlib record in between shares the shape of the chain (and the pid).
    assert records[1]["logger"] == "uvicorn.error" and records[1]["pid"] == first["pid"]
    assert records[2]["user_id"] == "user-2"


def test_access_line_follows_log_format_console() -> None:
    out = run("console", "INFO", "opaque")
    lines = out.splitlines()
    assert len(lines) == 3 and not any(line.startswith("{") for line in lines), out
    assert "request" in lines[0] and "[tasks_api.access]" in lines[0], out
    assert "route=/api/{user_id}/tasks/{task_id}" in lines[0] and "request_id=req-1" in out
    assert "db=postgresql://app:[redacted]@db/tasks" in lines[0] and "s3cret" not in out


def test_access_line_follows_log_level_and_a_later_configuration() -> None:
    assert [r["event"] for r in map(json.loads, run("json", "WARNING", "x").splitlines())] == [
        "between"
    ]
    # Used at INFO (and so cached by structlog), then reconfigured: the logger follows.
    lines = run("json", "INFO", "x", "json", "WARNING").splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["request", "between", "request"]
    lines = run("json", "WARNING", "x", "console", "INFO").splitlines()
    assert json.loads(lines[0])["event"] == "between"
    assert "user_id=user-3" in lines[1] and not lines[1].startswith("{"), lines


def test_a_broken_stdout_is_reported_and_never_raised() -> None:
    program = """
import io, sys
import structlog
from observability.logging import configure_logging
sys.stdout = io.StringIO()
configure_logging(level="INFO", fmt="json")
sys.stdout.close()
structlog.get_logger("tasks_api.access").info("request", status=200)
print("still running", file=sys.stderr)
"""
    done = run_python(program)
    assert done.returncode == 0, done.stderr
    assert "--- Logging error ---" in done.stderr and "still running" in done.stderr
