"""Contract, `/metrics`: with `--workers N` the pool gauges sum the live workers only, also
after a worker was killed (kill -9, no clean exit) and replaced by uvicorn."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.http_edges.conftest import serve_env
from tests.support import read_json_log, running_service, wait_until

POOL_MAX = 3


def _workers(server_pid: int) -> set[int]:
    """The uvicorn workers: spawned children of `serve` (not multiprocessing's helpers)."""
    out = set()
    for child in psutil.Process(server_pid).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline and child.status() != psutil.STATUS_ZOMBIE:
            out.add(child.pid)
    return out


def _two_workers(server_pid: int) -> set[int] | None:
    workers = _workers(server_pid)
    return workers if len(workers) == 2 else None


def _gauge(base: str, name: str) -> float | None:
    response = httpx.get(f"{base}/metrics", timeout=5)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def test_pool_gauges_sum_the_live_workers_after_one_was_killed(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = tmp_path_factory.mktemp("workers") / "serve.log"
    env = serve_env(database_url, DB_POOL_MIN="1", DB_POOL_MAX=str(POOL_MAX))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running_service(env, args=("--workers", "2"), log_path=log) as (base, proc):
        workers = wait_until(
            lambda: _two_workers(proc.pid),
            timeout=60,
            what="two workers",
        )
        expected = 2 * POOL_MAX
        wait_until(
            lambda: _gauge(base, "tasks_db_pool_max") == expected,
            timeout=30,
            what="both workers' gauges",
        )
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_until(
            lambda: (w := _two_workers(proc.pid)) and victim not in w and w,
            timeout=60,
            what="uvicorn replacing the killed worker",
        )
        assert victim not in replaced
        (newcomer,) = replaced - workers
        wait_until(
            lambda: any(
                e.get("event") == "service_ready" and e.get("pid") == newcomer
                for e in read_json_log(log, strict=False)
            ),
            timeout=60,
            what="the new worker ready",
        )
        time.sleep(1.5)  # its first gauge refresh runs right after start-up
        # The new worker adds its own gauges; the killed one's must stop counting.
        wait_until(
            lambda: _gauge(base, "tasks_db_pool_max") == expected,
            timeout=20,
            what=f"tasks_db_pool_max == {expected} (2 live workers x {POOL_MAX})",
        )
        assert _gauge(base, "tasks_db_pool_size") is not None
        size = _gauge(base, "tasks_db_pool_size")
        assert size is not None and size <= expected
