"""One bounded headless Locust run, with the CPU the service and its PostgreSQL backends used."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from loadtest.judging import Row, parse_stats, window_stats
from loadtest.services import ROOT, spawn, stop_process

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def parse_duration(text: str) -> int:
    text = text.strip().lower()
    for suffix, mult in (("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * mult)
    return int(text)


@dataclass
class LoadShape:
    users: int = 100
    spawn_rate: float = 50.0
    run_time: int = 30
    wait_min: float = 0.5
    wait_max: float = 1.5
    identities: int = 100
    per_user: int = 50
    nice: int = 0
    settle: float = 2.0


def shape_from_args(args: argparse.Namespace) -> LoadShape:
    """The load shape of the `run` and `tune` options (see run.py `_load_options`)."""
    return LoadShape(
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=parse_duration(args.run_time),
        wait_min=args.wait[0],
        wait_max=args.wait[1],
        identities=args.identities or args.users,
        per_user=args.tasks_per_user,
        nice=args.nice,
        settle=args.settle,
    )


def _wait_for_spawned(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> float | None:
    """When Locust logged that every user is running, or None (exited, or no such line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), path.open(encoding="utf-8") as fh:
            for line in fh:
                if ",#spawned," in line:
                    return float(line.split(",")[0])
        time.sleep(0.1)
    return None


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    import psutil  # type: ignore[import-untyped]

    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def cpu_snapshot(server_pid: int | None, database_url: str | None) -> dict[str, dict[int, float]]:
    """CPU seconds so far of the service (and its workers) and of its PostgreSQL backends.

    CPU per request is far steadier than latency on a machine shared with other work, so the
    tuning table reports it beside the percentiles.
    """
    import psutil

    app: list[int] = []
    if server_pid is not None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(server_pid)
            app = [root.pid, *(c.pid for c in root.children(recursive=True))]
    db: list[int] = []
    if database_url:
        with contextlib.suppress(psycopg.Error), psycopg.connect(database_url) as conn:
            db = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'tasks-api'"
                )
            ]
    return {"app": _cpu_seconds(app), "db": _cpu_seconds(db)}


def cpu_pressure_total() -> float | None:
    """Microseconds some runnable task waited for a CPU (Linux PSI); None where unavailable."""
    try:
        text = Path("/proc/pressure/cpu").read_text(encoding="utf-8")
    except OSError:
        return None
    return float(text.split("total=")[1].split()[0])


def cpu_used(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    return {
        key: sum(max(0.0, v - before.get(key, {}).get(pid, 0.0)) for pid, v in after[key].items())
        for key in after
    }


def run_locust(
    host: str,
    secret: str,
    prefix: str,
    shape: LoadShape,
    out: Path,
    server_pid: int | None = None,
    database_url: str | None = None,
) -> tuple[list[Row], Row, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    request_log = out / "requests.csv"
    request_log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "LOADTEST_REQUEST_LOG": str(request_log),
        "BETTER_AUTH_SECRET": secret,
        "LOADTEST_USER_PREFIX": prefix,
        "LOADTEST_IDENTITIES": str(shape.identities),
        "LOADTEST_WAIT_MIN": str(shape.wait_min),
        "LOADTEST_WAIT_MAX": str(shape.wait_max),
    }
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "-u",
        str(shape.users),
        "-r",
        str(shape.spawn_rate),
        "-t",
        f"{shape.run_time}s",
        "--stop-timeout",
        "5",
        "--reset-stats",
        "--only-summary",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--loglevel",
        "WARNING",
    ]
    with (out / "locust.log").open("wb") as log:
        proc = spawn(cmd, env=env, log=log, nice=shape.nice)
        try:
            # The measured window opens `settle` seconds after the last user started (the
            # ramp-up is a burst of new connections and Locust's own start-up on shared CPUs).
            spawned = _wait_for_spawned(request_log, proc, 30 + shape.users / shape.spawn_rate)
            if spawned is not None:
                time.sleep(max(0.0, spawned + shape.settle - time.time()))
            before = cpu_snapshot(server_pid, database_url)
            psi_before, t_before = cpu_pressure_total(), time.monotonic()
            window_start = time.time()
            # Locust stops itself after run_time; this bound only guards against a hang.
            proc.wait(timeout=shape.run_time + 60)
            after = cpu_snapshot(server_pid, database_url)
            psi_after, t_after = cpu_pressure_total(), time.monotonic()
            window_end = time.time()
        except subprocess.TimeoutExpired:
            stop_process(proc, timeout=10)
            raise RuntimeError(f"Locust did not stop by itself; see {out / 'locust.log'}") from None
        finally:
            stop_process(proc, timeout=10)
    stats = out / "locust_stats.csv"
    if not stats.exists():
        raise RuntimeError(f"Locust wrote no stats (exit {proc.returncode}); see {out}/locust.log")
    if spawned is not None and request_log.exists():
        rows, total = window_stats(request_log, window_start, window_end)
    else:  # no window: Locust's own numbers (counted from the end of the ramp-up)
        rows, total = parse_stats(stats)
    used = cpu_used(before, after)
    if psi_before is not None and psi_after is not None:
        # Share of the run during which something on this machine waited for a CPU.
        used["pressure"] = (psi_after - psi_before) / 1e6 / (t_after - t_before)
    return rows, total, used
