"""Fast guards of the HTTP edge pieces: the uvicorn internals api/http_server.py relies on,
its limits driven in process, HEAD routing whatever the route order, and admission control."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from api.admission import AdmissionControl
from api.http_server import BoundedHttpToolsProtocol, HTTPLimits
from api.routing import HTTPRoute

#: sha256 of the uvicorn 0.54 sources api/http_server.py was checked against. When uvicorn
#: changes them, re-read BoundedHttpToolsProtocol against the new code (the methods and
#: attributes its docstring lists), run tests/http_edges, then update these digests.
UVICORN_SOURCES = {
    HttpToolsProtocol: "18fdf324b11bf160e38739eed01a48516b460be9e88f1e20e4546e7363fd9232",
    RequestResponseCycle: "e67d470d435dcc1ce6de9773841524a4439a06afd3a7243e458dc7f7c952b310",
}


def test_uvicorn_internals_are_the_ones_http_server_was_written_against() -> None:
    assert uvicorn.__version__.startswith("0.54."), uvicorn.__version__
    for cls, digest in UVICORN_SOURCES.items():
        source = inspect.getsource(cls)
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"uvicorn's {cls.__name__} changed: re-check api/http_server.py"
        )


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(limits: HTTPLimits) -> tuple[BoundedHttpToolsProtocol, FakeTransport]:
    config = Config(app=_ok, http=BoundedHttpToolsProtocol, log_config=None)
    config.load()
    protocol = BoundedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    protocol._limits = limits
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


LIMITS = HTTPLimits(max_head_bytes=1024, max_headers=10, head_timeout=0.2, max_connections=100)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
        b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n",
    ],
    ids=["header", "request-line", "field-count"],
)
async def test_a_head_over_the_limits_is_431_and_closed(head: bytes) -> None:
    protocol, transport = _protocol(LIMITS)
    for start in range(0, len(head), 300):  # in pieces, as a slow client sends it
        if transport.closed:
            break
        protocol.data_received(head[start : start + 300])
    assert transport.closed
    status_line, _, rest = transport.written.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["status_code"] == 431


async def test_a_head_and_body_in_one_segment_are_served() -> None:
    protocol, transport = _protocol(LIMITS)
    body = b"x" * 5000  # bodies are not head bytes
    protocol.data_received(
        b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        + b"GET / HTTP/1.1\r\n\r\n"
    )  # fmt: skip
    await asyncio.sleep(0.05)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2, transport.written


async def test_a_head_not_finished_in_time_is_closed() -> None:
    protocol, transport = _protocol(LIMITS)
    await asyncio.sleep(0.3)
    assert transport.closed, "idle before the first byte"
    protocol, transport = _protocol(LIMITS)
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.1)
    protocol.data_received(b"X-A: 1\r\n")
    await asyncio.sleep(0.15)
    assert transport.closed, "slow head"


async def test_head_is_routed_to_get_even_when_another_method_comes_first() -> None:
    app = FastAPI()
    app.router.route_class = HTTPRoute

    @app.post("/thing")
    async def create() -> dict[str, str]:
        return {"made": "yes"}

    @app.get("/thing")
    async def read() -> dict[str, str]:
        return {"read": "yes"}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        got = await c.get("/thing")
        head = await c.head("/thing")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert "head" not in app.openapi()["paths"]["/thing"]


async def test_admission_refuses_early_and_hands_slots_over_in_order() -> None:
    release = asyncio.Event()
    served: list[int] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        served.append(scope["n"])
        await _ok(scope, receive, send)

    gate = AdmissionControl(slow, max_in_flight=1, timeout=0.3)
    sent: dict[int, list[dict[str, Any]]] = {}

    async def call(n: int) -> None:
        messages: list[dict[str, Any]] = []
        sent[n] = messages

        async def send(message: Any) -> None:
            messages.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        await gate({"type": "http", "path": "/x", "n": n, "headers": []}, receive, send)

    first = asyncio.create_task(call(1))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(call(2))
    await asyncio.sleep(0.4)  # the second waited longer than the timeout: refused
    assert waiting.done() and sent[2][0]["status"] == 503
    assert dict(sent[2][0]["headers"])[b"retry-after"] == b"1"
    third = asyncio.create_task(call(3))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, third)
    assert served == [1, 3] and gate.in_flight == 0
    # Probes are never queued.
    release.clear()
    blocked = asyncio.create_task(call(4))
    await asyncio.sleep(0.01)
    health: list[Any] = []

    async def record(message: Any) -> None:
        health.append(message)

    async def nothing() -> Any:
        return {"type": "http.request", "body": b""}

    probe = asyncio.create_task(gate({"type": "http", "path": "/health", "n": 5}, nothing, record))
    await asyncio.sleep(0.05)
    assert not probe.done()  # it reached the (blocked) app: not refused, not queued behind 4
    release.set()
    await asyncio.gather(blocked, probe)
    assert health[0]["status"] == 200


def test_limit_settings_defaults_and_derived_values() -> None:
    from api.settings import Settings

    settings = Settings(_env_file=None, db_pool_max=7, db_pool_timeout=3.0)  # type: ignore[call-arg]
    assert (settings.http_max_head_bytes, settings.http_max_headers) == (16 * 1024, 100)
    assert settings.http_head_timeout_seconds == 10.0
    assert settings.effective_max_concurrent_requests == 14  # 2 x DB_POOL_MAX
    assert settings.effective_admission_timeout == 3.0  # DB_POOL_TIMEOUT
    tuned = Settings(
        _env_file=None,  # type: ignore[call-arg]
        max_concurrent_requests=5,
        admission_timeout_seconds=0.5,
    )
    assert (tuned.effective_max_concurrent_requests, tuned.effective_admission_timeout) == (5, 0.5)
