"""Prometheus multiprocess mode for `serve --workers N`: one directory, made clean per start."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """With several workers, point prometheus_client at a fresh shared directory.

    Must run before any worker imports prometheus_client, so the `serve` command calls it
    before uvicorn starts the workers; they inherit PROMETHEUS_MULTIPROC_DIR.
    """
    if workers <= 1:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    directory = Path(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or Path(tempfile.gettempdir()) / f"tasks-api-metrics-{os.getpid()}"
    )
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory
