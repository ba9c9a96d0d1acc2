"""/metrics in process: HTTP counts and latency by route template and status, pool gauges,
SQL statement time, authentication failures; and the multiprocess directory of `serve`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import AsyncConnectionPool

from observability.metrics import pool_stats_reporter, update_pool_gauges
from observability.multiprocess import _cleanup, prepare_multiprocess_dir
from tests.support import auth, make_token

TASKS = "/api/{user_id}/tasks"
TASK = "/api/{user_id}/tasks/{task_id}"


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def get(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_and_timed_by_route_template_and_status(
    client: httpx.AsyncClient, user_id: str
) -> None:
    before = await scrape(client)
    h = auth(user_id)
    created = await client.post(f"/api/{user_id}/tasks", json={"title": "m"}, headers=h)
    assert created.status_code == 201
    for _ in range(3):
        assert (await client.get(f"/api/{user_id}/tasks", headers=h)).status_code == 200
    assert (await client.get(f"/api/{user_id}/tasks/{created.json()['id']}", headers=h)).is_success
    assert (await client.get(f"/api/{user_id}/tasks/999999999", headers=h)).status_code == 404
    assert (await client.get(f"/api/{user_id}/tasks")).status_code == 401
    assert (await client.get("/no/such/thing")).status_code == 404
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    total = "http_requests_total"
    assert delta(total, handler=TASKS, method="POST", status="201") == 1
    assert delta(total, handler=TASKS, method="GET", status="200") == 3
    assert delta(total, handler=TASK, method="GET", status="200") == 1
    assert delta(total, handler=TASK, method="GET", status="404") == 1
    assert delta(total, handler=TASKS, method="GET", status="401") == 1
    # No raw path ever becomes a label: unrouted requests are grouped under "none".
    assert delta(total, handler="none", method="GET", status="404") == 1
    handlers = {dict(labels).get("handler") for (name, labels) in after if name == total}
    assert not {"/health", "/ready", "/metrics"} & handlers
    assert not any(h and user_id in h for h in handlers)
    # Latency histogram by route template and status.
    count = "http_request_duration_seconds_count"
    assert delta(count, handler=TASKS, method="GET", status="200") == 3
    assert delta(count, handler=TASKS, method="GET", status="401") == 1
    inf = "http_request_duration_seconds_bucket"
    assert delta(inf, handler=TASKS, method="GET", status="200", le="+Inf") == 3
    assert (
        get(after, "http_request_duration_seconds_sum", handler=TASKS, method="GET", status="200")
        > 0
    )


async def test_cors_preflights_are_not_counted_but_other_options_requests_are(
    client: httpx.AsyncClient, user_id: str
) -> None:
    """CORSMiddleware answers a preflight before routing; it is no API traffic (and was never
    counted while the metrics sat inside CORS). An OPTIONS request that is no preflight is."""
    before = await scrape(client)
    preflight = await client.options(
        f"/api/{user_id}/tasks",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert (await client.options("/no/such/thing")).status_code == 404
    after = await scrape(client)

    def delta(**labels: str) -> float:
        name = "http_requests_total"
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta(handler="none", method="OPTIONS", status="200") == 0
    assert delta(handler="none", method="OPTIONS", status="404") == 1


async def test_sql_statement_time_by_statement_name(
    client: httpx.AsyncClient, user_id: str
) -> None:
    before = await scrape(client)
    h = auth(user_id)
    created = (await client.post(f"/api/{user_id}/tasks", json={"title": "s"}, headers=h)).json()
    await client.get(f"/api/{user_id}/tasks", headers=h)
    await client.get(f"/api/{user_id}/tasks?limit=5", headers=h)
    await client.patch(f"/api/{user_id}/tasks/{created['id']}/complete", headers=h)
    await client.delete(f"/api/{user_id}/tasks/{created['id']}", headers=h)
    after = await scrape(client)
    name = "tasks_db_statement_duration_seconds_count"
    for statement in ("create_task", "list_tasks", "list_tasks_page", "toggle_task", "delete_task"):
        assert get(after, name, statement=statement) - get(before, name, statement=statement) == 1
    assert get(after, "tasks_db_statement_duration_seconds_sum", statement="create_task") > 0


async def test_auth_failures_by_reason(client: httpx.AsyncClient, user_id: str) -> None:
    before = await scrape(client)
    url = f"/api/{user_id}/tasks"
    await client.get(url)
    await client.get(url, headers={"Authorization": "Basic abc"})
    await client.get(url, headers=auth(user_id, secret="wrong-secret-0123456789abcdef0123456789"))
    await client.get(url, headers={"Authorization": f"Bearer {make_token(user_id, ttl=-3600)}"})
    await client.get("/api/someone-else/tasks", headers=auth(user_id))
    after = await scrape(client)
    name = "tasks_auth_failures_total"
    for reason in ("missing_token", "wrong_scheme", "bad_signature", "expired", "user_mismatch"):
        assert get(after, name, reason=reason) - get(before, name, reason=reason) == 1, reason


async def test_pool_gauges_show_size_idle_and_a_starved_pool(database_url: str) -> None:
    """A real pool of one connection, held, with a second request waiting for it.

    The gauges are read right after they are set, with no await between: the session's app
    refreshes the same gauges from its own pool every second.
    """
    from prometheus_client import REGISTRY

    def gauges() -> dict[str, float | None]:
        update_pool_gauges(pool.get_stats())
        return {
            name: REGISTRY.get_sample_value(f"tasks_db_pool_{name}")
            for name in ("size", "idle", "waiting", "max")
        }

    pool: AsyncConnectionPool = AsyncConnectionPool(
        database_url, min_size=1, max_size=1, open=False
    )
    await pool.open(wait=True, timeout=10)
    try:
        assert gauges() == {"size": 1, "idle": 1, "waiting": 0, "max": 1}
        async with pool.connection():
            assert gauges() == {"size": 1, "idle": 0, "waiting": 0, "max": 1}
            waiter = asyncio.create_task(pool.getconn(timeout=10))
            for _ in range(250):
                await asyncio.sleep(0.02)
                if pool.get_stats().get("requests_waiting", 0) == 1:
                    break
            assert gauges() == {"size": 1, "idle": 0, "waiting": 1, "max": 1}
        conn = await asyncio.wait_for(waiter, 10)
        await pool.putconn(conn)
        assert gauges()["waiting"] == 0
    finally:
        await pool.close()


async def test_the_reporter_refreshes_the_gauges_until_cancelled(database_url: str) -> None:
    pool: AsyncConnectionPool = AsyncConnectionPool(
        database_url, min_size=1, max_size=3, open=False
    )
    await pool.open(wait=True, timeout=10)
    reporter = asyncio.create_task(pool_stats_reporter(pool, interval=0.01))
    try:
        from prometheus_client import REGISTRY

        for _ in range(200):
            await asyncio.sleep(0.005)
            if REGISTRY.get_sample_value("tasks_db_pool_max") == 3:
                break
        assert REGISTRY.get_sample_value("tasks_db_pool_max") == 3
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await pool.close()
    assert reporter.cancelled()


async def test_pool_gauges_are_exposed_by_the_service(client: httpx.AsyncClient) -> None:
    await asyncio.sleep(1.2)  # the service's reporter refreshes every second
    samples = await scrape(client)
    # Other suites may run apps with other pool sizes in this process: presence, not values
    # (the Prometheus suite checks the values on a service of its own).
    assert get(samples, "tasks_db_pool_max") >= 1
    assert get(samples, "tasks_db_pool_size") >= 1
    assert ("tasks_db_pool_idle", frozenset()) in samples
    assert ("tasks_db_pool_waiting", frozenset()) in samples


def test_multiprocess_dir_is_fresh_and_removed_by_its_creator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # setenv first, so that monkeypatch restores the original state (unset) afterwards.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert prepare_multiprocess_dir(1) is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    directory = prepare_multiprocess_dir(2)
    assert directory is not None and directory.is_dir() and not any(directory.iterdir())
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    (directory / "counter_1.db").write_bytes(b"x")
    _cleanup(directory, owned=True, creator=os.getpid() + 1)  # a worker: leaves it alone
    assert directory.exists()
    _cleanup(directory, owned=True, creator=os.getpid())
    assert not directory.exists()


def test_a_named_multiprocess_dir_is_emptied_never_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    named = tmp_path / "metrics"
    named.mkdir()
    (named / "counter_123.db").write_bytes(b"stale")
    (named / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(named))
    assert prepare_multiprocess_dir(3) == named
    assert sorted(p.name for p in named.iterdir()) == ["keep.txt"]
    (named / "gauge_livesum_9.db").write_bytes(b"x")
    _cleanup(named, owned=False, creator=os.getpid())
    assert sorted(p.name for p in named.iterdir()) == ["keep.txt"]


async def test_each_request_is_routed_once(
    client: httpx.AsyncClient, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metrics take the route template from scope["route"], set by the router, instead of
    matching the request against every route a second time (prometheus-fastapi-instrumentator's
    middleware did: issue 13, 2 % of a list request's samples)."""
    from fastapi.routing import APIRoute

    calls: list[str] = []
    original = APIRoute.matches

    def counting(self: APIRoute, scope: Any) -> Any:
        calls.append(self.path)
        return original(self, scope)

    before = await scrape(client)
    monkeypatch.setattr(APIRoute, "matches", counting)
    assert (await client.get(f"/api/{user_id}/tasks", headers=auth(user_id))).status_code == 200
    monkeypatch.undo()
    assert calls.count(TASKS) == 1, calls
    after = await scrape(client)
    key = (
        "http_requests_total",
        frozenset({("handler", TASKS), ("method", "GET"), ("status", "200")}),
    )
    assert after[key] - before.get(key, 0.0) == 1
