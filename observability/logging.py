"""One structured log stream for the app, uvicorn and psycopg: JSON, or console on a terminal."""

from __future__ import annotations

import io
import logging
import logging.config
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

_configured: tuple[str, str] | None = None

# Belt and braces: nothing should ever log a credential, but if a message from a library
# carries one (a URL with a password, a bearer header, a JWT), it is masked before output.
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER: Final = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
_URL_PASSWORD: Final = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
_SECRET_KEYS: Final = frozenset(
    {"authorization", "token", "access_token", "password", "secret", "cookie", "body"}
)
REDACTED: Final = "[redacted]"
# What every one of the three patterns above needs; most values (methods, routes, ids, numbers
# as text) have none of it and skip the three substitutions: a third of an access line's cost.
_SUSPECT: Final = re.compile(r"eyJ|(?i:bearer)|://")


def _scrub(value: str) -> str:
    if _SUSPECT.search(value) is None:
        return value
    value = _JWT.sub(REDACTED, value)
    value = _BEARER.sub("Bearer " + REDACTED, value)
    return _URL_PASSWORD.sub(r"\g<scheme>:" + REDACTED + "@", value)


def _redact_nested(value: Any) -> Any:
    """`value` (a dict, list or tuple field, or anything inside one) masked as a field is: a
    secret key's value replaced, strings scrubbed; other values as they are."""
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and key.lower() in _SECRET_KEYS
            else _redact_nested(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_nested(item) for item in value]
    if type(value) is tuple:
        return tuple(_redact_nested(item) for item in value)
    return value


def redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask tokens, Authorization values and URL passwords in every string field, also inside
    dict, list and tuple fields (e.g. a logged mapping of headers)."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _redact_nested(value)
    return event_dict


def _masked_traceback(sio: TextIO, exc_info: Any) -> None:
    """LOG_FORMAT=console's exception formatter. ConsoleRenderer formats `exc_info` itself,
    after redact_secrets ran, so its text is masked here: structlog's plain traceback (never
    a pretty one with frame locals, where any secret could sit unrecognisable), scrubbed as
    json's `exception` field is."""
    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    sio.write(_scrub(text.getvalue()))


def _drop_color_message(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # uvicorn passes an ANSI-coloured copy of each message as `extra`; it is noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


def _add_pid(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Under `serve --workers N` this tells the workers' lines apart.
    event_dict["pid"] = os.getpid()
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _add_pid,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
    ]


def _final_processors(fmt: str) -> list[Any]:
    """The processors that turn an event dict into its line (a str without the newline): the
    same for structlog's own events and for stdlib records, so both have one shape."""
    if fmt == "console":
        # The console renderer formats exceptions itself (_masked_traceback); no format_exc_info.
        return [
            redact_secrets,
            structlog.dev.ConsoleRenderer(
                colors=sys.stdout.isatty(), exception_formatter=_masked_traceback
            ),
        ]
    return [
        structlog.processors.format_exc_info,
        redact_secrets,
        structlog.processors.JSONRenderer(),
    ]


class _Stdout:
    """Where structlog's own loggers write: the stream and lock of the root logger's stdout
    handler, so that their lines and the stdlib records (uvicorn, psycopg) stay one stream,
    each line one `write` under one lock and flushed at once, as `StreamHandler.emit` does.

    `handler` is replaced by every `configure_logging`; it starts as None (nothing written
    before the first configuration, which replaces structlog's defaults anyway).
    """

    handler: logging.StreamHandler[Any] | None = None
    # The format's final processors (see _final_processors), replaced with the handler.
    final: tuple[Any, ...] = ()


class _LineWriter:
    """The structlog "logger" under our bound loggers (structlog's performance docs: a
    structlog-native logger writing straight to the stream, no stdlib `logging` on the way).

    `name` is what `get_logger(name)` was given, for `add_logger_name` (which reads
    `logger.name`, as for a stdlib logger). Every level method takes the rendered line (a str)
    and writes it with a newline, then flushes; an error while writing (a closed or broken
    stdout) is reported as `logging.Handler.handleError` reports it (to stderr, unless
    `logging.raiseExceptions` is False) and never raised to the caller: an access line must
    not fail a request.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str) -> None:
        handler = _Stdout.handler
        if handler is None:
            return
        try:
            with handler.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                handler.stream.write(line + handler.terminator)
                handler.stream.flush()
        except Exception:  # reported as a stdlib handler reports its failures
            handler.handleError(logging.makeLogRecord({"name": self.name, "msg": line}))

    debug = info = warning = warn = error = err = critical = fatal = exception = log = msg


def _writer_for(name: str = "root", *_: Any) -> _LineWriter:
    """structlog's logger factory: `get_logger(name)` -> a `_LineWriter` named `name` (the
    stdlib factory's `logging.getLogger(name)`; our code always passes a name)."""
    return _LineWriter(name)


def _render(logger: Any, method_name: str, event_dict: Any) -> Any:
    """The last structlog processor: the current format's final processors (replaced on
    reconfiguration, so loggers cached before it follow it)."""
    for processor in _Stdout.final:
        event_dict = processor(logger, method_name, event_dict)
    return event_dict


class _BoundLogger(structlog.BoundLoggerBase):
    """The wrapper class of every structlog logger: `make_filtering_bound_logger(level)`'s
    methods (a level below LOG_LEVEL is a bare `return None`), copied in by
    `configure_logging`, so that a logger cached on first use still follows a later
    configuration's level (the filtering classes themselves are fixed per level)."""


def _set_level(level: str) -> None:
    filtering = structlog.make_filtering_bound_logger(level)
    for name, value in vars(filtering).items():
        if callable(value) and not name.startswith("__"):
            setattr(_BoundLogger, name, value)


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """One stream on stdout, one line per event, for our structlog loggers and for stdlib
    records (uvicorn, psycopg), in the format LOG_FORMAT asks (contract, "Configuration":
    `json`, or `console`) and filtered at LOG_LEVEL.

    `level` is a stdlib level name (DEBUG, INFO, WARNING, ERROR, CRITICAL; anything else
    raises KeyError, or ValueError from `logging`); `fmt` is "json" or "console" (anything
    else is JSON). Calling it again with the same values does nothing; with other values it
    applies to every logger, those already used included.

    Two paths, one shape. Stdlib records go Logger -> StreamHandler -> ProcessorFormatter
    (the shared chain, then the format's final processors). Our code's `structlog.get_logger`
    loggers skip the stdlib machinery, as structlog's performance chapter recommends for hot
    paths such as the access line (a filtering bound logger, cached on first use, rendering
    with the same processors and writing the line straight to the handler's stream under its
    lock): about half the cost of a line (loadtest/bench_access_log.py). Keys, their order,
    values, redaction and the flush after every line are those of the stdlib path.
    """
    global _configured
    if _configured == (level, fmt):
        return
    # Nothing we render uses a record's caller, thread or process fields (the pid comes from
    # _add_pid): skip looking them up for every record, as the logging HOWTO's "Optimization"
    # section describes. The caller lookup walks the stack: 6 % of an access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    final = _final_processors(fmt)
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": _shared_processors(),
        "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"structured": formatter},
            "handlers": {
                "stdout": {
                    "class": "logging.StreamHandler",
                    "formatter": "structured",
                    "stream": "ext://sys.stdout",
                }
            },
            "root": {"handlers": ["stdout"], "level": level},
            "loggers": {
                # One stream: uvicorn's own handlers go, its records propagate to root.
                "uvicorn": {"handlers": [], "propagate": True, "level": level},
                "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
                # Our access line replaces uvicorn's, which would double every request.
                "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
                "psycopg": {"handlers": [], "propagate": True, "level": "WARNING"},
                "psycopg.pool": {"handlers": [], "propagate": True, "level": "WARNING"},
            },
        }
    )
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    _Stdout.handler, _Stdout.final = handler, tuple(final)
    _set_level(level)
    structlog.configure(
        processors=[
            # The shared chain minus ExtraAdder and the uvicorn clean-up (stdlib records only).
            *_shared_processors()[:-2],
            structlog.processors.StackInfoRenderer(),
            _render,
        ],
        logger_factory=_writer_for,
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=True,
    )
    _configured = (level, fmt)
