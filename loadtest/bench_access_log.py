"""Micro-benchmark: microseconds per JSON access line through the service's logging set-up.

  uv run python -m loadtest.bench_access_log
  # another checkout's logging, for a side-by-side (run both a few times, interleaved):
  PYTHONPATH=/tmp/base uv run python loadtest/bench_access_log.py

The line is rendered exactly as in production (structlog -> logging -> ProcessorFormatter ->
JSON) and written to /dev/null; the best of 5 rounds of 20,000 lines is printed.
"""

from __future__ import annotations

import os
import sys
import timeit


def main() -> None:
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the handler writes here until exit
    import structlog

    from observability.logging import configure_logging

    configure_logging(level="INFO", fmt="json")
    structlog.contextvars.bind_contextvars(request_id="0123456789abcdef0123456789abcdef")
    log = structlog.get_logger("tasks_api.access")

    def one() -> None:
        log.info(
            "request", method="GET", route="/api/{user_id}/tasks", status=200,
            duration_ms=1.23, user_id="user-17",
        )  # fmt: skip

    n = 20_000
    best = min(timeit.repeat(one, number=n, repeat=5))
    sys.stderr.write(f"{best / n * 1e6:.1f} us per access line\n")


if __name__ == "__main__":
    main()
