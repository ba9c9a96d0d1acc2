"""api/lifecycle.py without a server: the uvicorn internals it relies on, and its drain rules.

The real-process behaviour (signals at every phase, PID 1, drain behind HAProxy) is in
tests/reliability/test_signals.py and test_rolling_restart.py; these fail fast on a uvicorn
upgrade that moves what the drain hooks into.
"""

from __future__ import annotations

import inspect
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from uvicorn.supervisors import multiprocess

from api import lifecycle
from api.lifecycle import DrainingProcess, DrainingServer


@pytest.fixture(autouse=True)
def _not_draining() -> Iterator[None]:
    lifecycle.reset_drain()
    yield
    lifecycle.reset_drain()


def _config() -> uvicorn.Config:
    return uvicorn.Config("api.app:create_app", factory=True, log_config=None)


def _server(drain: float = 5.0, *, started: bool = True) -> DrainingServer:
    server = DrainingServer(_config(), drain_seconds=drain)
    server.started = started
    return server


def _names(function: object) -> set[str]:
    return set(function.__code__.co_names)  # type: ignore[attr-defined]


def test_uvicorn_server_internals_the_drain_relies_on() -> None:
    server = uvicorn.Server(_config())
    for attribute in ("should_exit", "force_exit", "started"):
        assert getattr(server, attribute) is False, attribute
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == [
        "self",
        "sig",
        "frame",
    ]
    assert inspect.iscoroutinefunction(uvicorn.Server.on_tick)
    assert list(inspect.signature(uvicorn.Server.on_tick).parameters) == ["self", "counter"]
    # main_loop polls on_tick, which returns should_exit; shutdown honours force_exit.
    assert "on_tick" in _names(uvicorn.Server.main_loop)
    assert "force_exit" in _names(uvicorn.Server._wait_tasks_to_complete)
    assert "force_exit" in _names(uvicorn.Server.shutdown)
    # capture_signals installs the bound handle_exit for SIGTERM and SIGINT.
    saved = {sig: signal.getsignal(sig) for sig in lifecycle.STOP_SIGNALS}
    try:
        with server.capture_signals():
            for sig in lifecycle.STOP_SIGNALS:
                assert signal.getsignal(sig) == server.handle_exit
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_uvicorn_supervisor_internals_the_workers_drain_relies_on() -> None:
    # Every place the supervisor makes a worker goes through the module's `Process` name.
    for method in ("init_processes", "keep_subprocess_alive", "restart_all", "handle_ttin"):
        assert "Process" in _names(getattr(multiprocess.Multiprocess, method)), method
    assert isinstance(inspect.getattr_static(multiprocess.Process, "server"), property)
    assert {"join_all", "terminate_all"} <= _names(multiprocess.Multiprocess.run)
    assert "signal_queue" in _names(multiprocess.Multiprocess.__init__)
    assert "pid" in dir(multiprocess.Process)
    process = DrainingProcess.__new__(DrainingProcess)
    process.config, process._server, process.drain_seconds = _config(), None, 2.5
    assert isinstance(process.server, DrainingServer)
    assert process.server.drain_seconds == 2.5


def test_first_signal_drains_then_stops_after_the_drain() -> None:
    server = _server(drain=5.0)
    server.handle_exit(signal.SIGTERM, None)
    assert lifecycle.is_draining()
    assert not server.should_exit  # still serving
    assert server.drain_deadline is not None
    assert 4.0 < server.drain_deadline - time.monotonic() <= 5.0
    server.drain_deadline = time.monotonic() - 0.01  # the drain is over
    import asyncio

    assert asyncio.run(server.on_tick(1)) is True
    assert server.should_exit and not server.force_exit


def test_no_drain_stops_at_once() -> None:
    server = _server(drain=0.0)
    server.handle_exit(signal.SIGTERM, None)
    assert lifecycle.is_draining() and server.should_exit and not server.force_exit


def test_the_same_signal_again_forces_another_does_not() -> None:
    server = _server(drain=5.0)
    server.handle_exit(signal.SIGINT, None)  # Ctrl+C reaches a worker directly...
    server.handle_exit(signal.SIGTERM, None)  # ...and again through the supervisor
    assert not server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGINT, None)  # a second Ctrl+C
    assert server.should_exit and server.force_exit


def test_a_signal_during_startup_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []

    def fake_exit(status: int) -> None:
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(lifecycle, "_flush_and_exit", fake_exit)
    with pytest.raises(SystemExit):
        _server(started=False).handle_exit(signal.SIGTERM, None)
    assert exits == [0]


async def test_ready_answers_503_while_draining(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ready")).status_code == 200
    lifecycle.begin_drain()
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["detail"] == "Shutting down"
    assert (await client.get("/health")).status_code == 200  # the process still answers
