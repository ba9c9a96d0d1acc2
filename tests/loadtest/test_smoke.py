"""The load-test runner: thresholds judged as documented, and a few-second run on a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.judging import PROFILES, Row, judge, parse_stats
from tests.support import ROOT

ENDPOINT_ROWS = [
    ("GET", "/api/{user_id}/tasks"),
    ("POST", "/api/{user_id}/tasks"),
    ("GET", "/api/{user_id}/tasks/{task_id}"),
    ("PUT", "/api/{user_id}/tasks/{task_id}"),
    ("PATCH", "/api/{user_id}/tasks/{task_id}/complete"),
    ("DELETE", "/api/{user_id}/tasks/{task_id}"),
]


def rows(p95: float, p99: float, failures: int = 0) -> tuple[list[Row], Row]:
    out = [Row(m, n, 100, 0, 5, p95, p99, 10.0, p99) for m, n in ENDPOINT_ROWS]
    return out, Row("", "Aggregated", 600, failures, 5, p95, p99, 60.0, p99)


def test_fast_run_passes_spec_and_strict() -> None:
    rs, total = rows(p95=20, p99=40)
    assert judge(PROFILES["spec"], rs, total, users=100) == []
    assert judge(PROFILES["strict"], rs, total, users=100) == []


def test_spec_holds_create_to_50ms_and_list_to_100ms_at_p95() -> None:
    rs, total = rows(p95=20, p99=40)
    rs[1].p95 = 50  # create
    rs[0].p95 = 99  # list
    missed = judge(PROFILES["spec"], rs, total, users=100)
    assert missed == ["create: p95 50 ms >= 50 ms"]


def test_strict_needs_100_users_and_p99_under_50ms() -> None:
    rs, total = rows(p95=20, p99=40)
    rs[2].p99 = 60
    missed = judge(PROFILES["strict"], rs, total, users=10)
    assert "10 users, the profile needs at least 100" in missed
    assert "get: p99 60 ms >= 50 ms" in missed


def test_any_error_fails_every_profile_even_smoke() -> None:
    rs, total = rows(p95=1000, p99=5000, failures=1)
    for profile in PROFILES.values():
        assert any("failed requests" in m for m in judge(profile, rs, total, users=100))
    # Smoke never judges speed: slow but error-free passes.
    rs, total = rows(p95=1000, p99=5000)
    assert judge(PROFILES["smoke"], rs, total, users=2) == []


def test_smoke_run_against_a_real_server(pg_server_url: str, tmp_path: Path) -> None:
    """The runner starts the service, seeds, drives it for a few seconds and stops it all."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "loadtest.run", "run", "--profile", "smoke", "--serve",
            "--database-url", pg_server_url, "--fresh-database", "--users", "4",
            "--spawn-rate", "4", "--run-time", "4s", "--wait", "0.1", "0.3",
            "--tasks-per-user", "5", "--warm-up", "0.5", "--settle", "0.5",
            "--report-dir", str(tmp_path),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "profile smoke (judged): PASS" in proc.stdout
    _, total = parse_stats(tmp_path / "locust_stats.csv")
    assert total.requests > 0 and total.failures == 0
    assert (tmp_path / "report.html").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_always_require_zero_errors_and_requests(name: str) -> None:
    rs, total = rows(p95=1, p99=1)
    total.requests = 0
    assert "no request was made" in judge(PROFILES[name], rs, total, users=100)
