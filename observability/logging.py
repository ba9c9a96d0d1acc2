"""One structured log stream for the app, uvicorn and psycopg: JSON, or console on a terminal."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_configured: tuple[str, str] | None = None


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one ProcessorFormatter on stdout."""
    global _configured
    if _configured == (level, fmt):
        return
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": _shared_processors(),
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
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
            *_shared_processors()[:-1],
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _configured = (level, fmt)
