"""One structured log stream for the app, uvicorn and psycopg: JSON, or console on a terminal."""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

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


def redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask tokens, Authorization values and URL passwords in every string field."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


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


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one ProcessorFormatter on stdout."""
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
    final: list[Any]
    if fmt == "console":
        # The console renderer formats exceptions itself (readably); no format_exc_info.
        final = [redact_secrets, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
    else:
        final = [
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ]
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
    structlog.configure(
        processors=[
            # The shared chain minus ExtraAdder and the uvicorn clean-up (stdlib records only).
            *_shared_processors()[:-2],
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _configured = (level, fmt)
