"""Imported first by `api.cli`: remember SIGTERM/SIGINT while the rest is still importing.

Importing the service takes seconds on a busy host. As PID 1 in a container a signal with
no handler is dropped by the kernel, so a stop sent in that window would be lost and the
container killed after its grace period. This module installs a handler that only records
the signal; `api.cli.main` then stops at once if one arrived (issue 17, point 2).
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    # Only record: raising here could interrupt an import halfway and leave a broken module.
    _received.append(signum)


def received() -> int | None:
    """The first stop signal received since import, or None."""
    return _received[0] if _received else None


for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _remember)
