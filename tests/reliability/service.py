"""Running `tasks-api serve` in the background, or until it gives up at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT

__all__ = ["serve_until_exit", "spawn_service"]


def spawn_service(
    env: dict[str, str], *, port: int, log_path: Path, args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """`tasks-api serve` in the background; the caller stops it (see `stop_process`)."""
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def serve_until_exit(env: dict[str, str]) -> tuple[int, str, float]:
    """Run `tasks-api serve` expecting it to give up at start-up: (status, stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr, time.monotonic() - started
