"""Helpers of the observability suites: access lines of a JSON log, a real Prometheus server."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port, require, stop_process, wait_http, wait_until

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


def access_lines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r for r in records if r.get("event") == "request" and r.get("logger") == "tasks_api.access"
    ]


class Prometheus:
    """A real Prometheus server on a loopback port, scraping `targets` every second."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=5.0)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that yields one sample (None while it yields none)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} gave {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_value(
        self, expr: str, accept: Callable[[float], bool], *, timeout: float = 30.0
    ) -> float:
        def probe() -> tuple[float] | None:  # a tuple, so that an accepted 0.0 is truthy
            value = self.value(expr)
            return (value,) if value is not None and accept(value) else None

        found: tuple[float] = wait_until(
            probe, timeout=timeout, interval=0.5, what=f"Prometheus {expr}"
        )
        return found[0]

    def targets(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base}/api/v1/targets", timeout=5.0)
        response.raise_for_status()
        active: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return active


@contextlib.contextmanager
def running_prometheus(targets: list[str], *, job: str = "tasks-api") -> Iterator[Prometheus]:
    """Start Prometheus with a temporary config and storage; stop it and remove both after."""
    require(
        Path(PROMETHEUS_BIN).exists(),
        "the prometheus server is not installed (scripts/ci/setup-prometheus.sh)",
    )
    workdir = Path(tempfile.mkdtemp(prefix="tasks-api-prometheus-"))
    config = workdir / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: '{job}'\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: [{quoted}]\n",
        encoding="utf-8",
    )
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready", timeout=30.0, proc=proc)
        yield Prometheus(base)
    finally:
        stop_process(proc, timeout=15)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
