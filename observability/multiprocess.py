"""Prometheus multiprocess mode for `serve --workers N`: one directory, fresh per start."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def _clear(directory: Path) -> None:
    """Delete the metric files (`*.db`) of an earlier run, leaving anything else."""
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def _cleanup(directory: Path, *, owned: bool, creator: int) -> None:
    """At exit of the `serve` process (`creator`): remove the directory if we made it
    (`owned`), else only empty it of metric files."""
    if os.getpid() != creator:  # never from a worker
        return
    if owned:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        _clear(directory)


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """With several workers, point prometheus_client at a fresh shared directory.

    Must run before any worker imports prometheus_client, so the `serve` command calls it
    before uvicorn starts the workers; they inherit PROMETHEUS_MULTIPROC_DIR. A directory we
    make is removed when `serve` exits; one the operator named is emptied of metric files at
    start and at exit, never removed. Counters restart at zero with the service, which
    Prometheus's rate() and increase() treat as a counter reset.

    `workers` is `serve --workers`; returns the directory, or None for one worker (then
    PROMETHEUS_MULTIPROC_DIR is unset, and metrics stay in memory). Raises OSError when
    the directory cannot be made.
    """
    if workers <= 1:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        _clear(directory)
    else:
        directory = Path(tempfile.mkdtemp(prefix="tasks-api-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    atexit.register(_cleanup, directory, owned=not named, creator=os.getpid())
    log.info("metrics_multiprocess", directory=str(directory), workers=workers)
    return directory


def _running(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def forget_dead_processes() -> list[int]:
    """`mark_process_dead` for every process whose live gauges are in the multiprocess
    directory but which is no longer running, however it ended (kill -9, OOM killer): its
    `livesum`/`livemax`… gauges then stop counting (contract, `/metrics`: "sums the live
    workers only, also after a worker was killed and replaced"). Counters and histograms of
    a dead worker are kept, as Prometheus expects of counters. Returns the pids forgotten;
    a no-op outside multiprocess mode."""
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not named:
        return []
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for path in Path(named).glob("gauge_live*_*.db"):
        pid_text = path.stem.rpartition("_")[2]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _running(int(pid_text)):
            dead.add(int(pid_text))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, named)  # type: ignore[no-untyped-call]
        log.warning("metrics_dead_worker_forgotten", dead_pid=pid)
    return sorted(dead)
