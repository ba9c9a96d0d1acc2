"""A real Prometheus scrapes the real service every second; its HTTP API sees every signal."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.observability.helpers import Prometheus, access_lines, running_prometheus
from tests.support import (
    ROOT,
    make_token,
    new_user_id,
    read_json_log,
    running_service,
    service_env,
    wait_until,
)

TASKS = 'handler="/api/{user_id}/tasks"'
JOB = 'job="tasks-api"'


def readme_promql() -> list[str]:
    """The PromQL of the README's Observability section: each line of its promql blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Observability", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```promql\n(.*?)```", section, flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _target(base: str) -> str:
    return str(urlsplit(base).netloc)


def _wait_up(prometheus: Prometheus) -> None:
    prometheus.wait_value(f"up{{{JOB}}}", lambda v: v == 1)


def test_prometheus_scrapes_requests_latency_pool_sql_and_auth_signals(database_url: str) -> None:
    user = new_user_id()
    bearer = {"Authorization": f"Bearer {make_token(user)}"}
    env = service_env(database_url, DB_POOL_MIN="2", DB_POOL_MAX="4")
    with (
        running_service(env) as (base, _),
        running_prometheus([_target(base)]) as prometheus,
        httpx.Client(base_url=base, timeout=10.0) as http,
    ):
        _wait_up(prometheus)
        tasks = f"/api/{user}/tasks"
        for i in range(3):
            assert http.post(tasks, json={"title": f"t{i}"}, headers=bearer).status_code == 201
        for _ in range(5):
            assert http.get(tasks, headers=bearer).status_code == 200
        for _ in range(2):
            assert http.get(tasks).status_code == 401
        assert http.get(f"{tasks}/999999999", headers=bearer).status_code == 404
        assert http.get("/nowhere").status_code == 404
        for path in ("/health", "/ready", "/metrics"):
            assert http.get(path).status_code == 200

        # Requests by route template and status.
        assert prometheus.wait_value(
            f"sum(http_requests_total{{{JOB},{TASKS}}})", lambda v: v == 10
        )
        by_status = {
            (r["metric"]["method"], r["metric"]["status"]): float(r["value"][1])
            for r in prometheus.query(f"http_requests_total{{{JOB},{TASKS}}}")
        }
        assert by_status == {("POST", "201"): 3, ("GET", "200"): 5, ("GET", "401"): 2}
        assert (
            prometheus.value(
                'http_requests_total{handler="/api/{user_id}/tasks/{task_id}",status="404"}'
            )
            == 1
        )
        assert prometheus.value('http_requests_total{handler="none",status="404"}') == 1
        assert prometheus.query('http_requests_total{handler=~"/health|/ready|/metrics"}') == []

        # Pool gauges (size, idle, waiting, and the configured maximum).
        assert prometheus.wait_value(f"tasks_db_pool_max{{{JOB}}}", lambda v: v == 4)
        assert prometheus.wait_value(f"tasks_db_pool_size{{{JOB}}}", lambda v: 2 <= v <= 4)
        prometheus.wait_value(f"tasks_db_pool_idle{{{JOB}}}", lambda v: 0 <= v <= 4)
        prometheus.wait_value(f"tasks_db_pool_waiting{{{JOB}}}", lambda v: v == 0)

        # SQL statement time by statement name, and authentication failures by reason.
        assert prometheus.wait_value(
            'tasks_db_statement_duration_seconds_count{statement="create_task"}', lambda v: v == 3
        )
        assert (
            prometheus.value('tasks_db_statement_duration_seconds_count{statement="list_tasks"}')
            == 5
        )
        assert prometheus.value('tasks_auth_failures_total{reason="missing_token"}') == 2

        # The README's questions, asked as written there. rate() needs the counters to grow
        # between scrapes, so traffic keeps coming while we wait.
        def answered(expr: str) -> list[dict[str, object]]:
            assert http.get(tasks, headers=bearer).status_code == 200
            return prometheus.query(expr)

        queries = readme_promql()
        assert len(queries) >= 5, queries
        for expr in queries:
            prometheus.query(expr)  # every query in the README is valid PromQL
        for expr in queries:
            wait_until(lambda e=expr: answered(e), timeout=30, what=f"README {expr}")
        slow = prometheus.wait_value(
            "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
            f'{{{JOB},{TASKS},method="GET",status="200"}}[1m])))',
            lambda v: 0 < v <= 10,
        )
        assert 0 < slow <= 10
        assert prometheus.value(f"max_over_time(tasks_db_pool_waiting{{{JOB}}}[5m])") == 0


def test_under_two_workers_prometheus_counts_every_request_once(
    database_url: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "service.log"
    user = new_user_id()
    bearer = {"Authorization": f"Bearer {make_token(user)}"}
    env = service_env(database_url, DB_POOL_MIN="1", DB_POOL_MAX="3")
    sent = 60
    with (
        running_service(env, args=("--workers", "2"), log_path=log_path, timeout=90) as (base, _),
        running_prometheus([_target(base)]) as prometheus,
    ):
        _wait_up(prometheus)
        # Both workers are up when their pools add up: livesum over the live workers.
        assert prometheus.wait_value(f"tasks_db_pool_max{{{JOB}}}", lambda v: v == 6, timeout=60)
        directory = Path(
            next(
                r["directory"]
                for r in read_json_log(log_path)
                if r.get("event") == "metrics_multiprocess"
            )
        )
        assert directory.is_dir() and any(directory.glob("*.db"))

        def one(i: int) -> int:
            # A new connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=base, timeout=10.0) as http:
                if i % 3 == 0:
                    return http.post(
                        f"/api/{user}/tasks", json={"title": f"{i}"}, headers=bearer
                    ).status_code
                return http.get(f"/api/{user}/tasks", headers=bearer).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(one, range(sent)))
        assert statuses.count(201) == sent // 3 and statuses.count(200) == sent - sent // 3

        assert (
            prometheus.wait_value(f"sum(http_requests_total{{{JOB},{TASKS}}})", lambda v: v >= sent)
            == sent
        )
        assert prometheus.value(f'http_requests_total{{{JOB},{TASKS},status="201"}}') == sent // 3
        assert (
            prometheus.value(f"sum(http_request_duration_seconds_count{{{JOB},{TASKS}}})") == sent
        )
        assert (
            prometheus.value('tasks_db_statement_duration_seconds_count{statement="create_task"}')
            == sent // 3
        )
        assert prometheus.value(f"tasks_db_pool_size{{{JOB}}}") >= 2  # type: ignore[operator]

    # The requests really were served by both workers, and `serve` removed its directory.
    records = read_json_log(log_path)
    assert not [r for r in records if "died" in str(r["event"])], "a worker was restarted"
    ours = [r for r in access_lines(records) if r.get("user_id") == user]
    assert len(ours) == sent
    assert len({r["pid"] for r in ours}) == 2
    assert not directory.exists()
