"""Contract, "HTTP semantics": idle and slow connections never delay other clients. A body
that never arrives, or trickles in, is answered 408 after HTTP_BODY_TIMEOUT_SECONDS (from
the end of the head) and holds no admission slot meanwhile (api/body.py). Against a real
`tasks-api serve` with a 2 s body deadline and 4 admission slots."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.http_edges.conftest import (
    host_port,
    parse_response,
    raw_request,
    read_until_closed,
    serve_env,
)
from tests.support import auth, make_token, new_user_id, running_service

BODY_TIMEOUT = 2.0
SLOTS = 4


@pytest.fixture(scope="module")
def slow_service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("slow-bodies") / "serve.log"
    env = serve_env(
        database_url,
        HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        MAX_CONCURRENT_REQUESTS=str(SLOTS),
        ADMISSION_TIMEOUT_SECONDS="3",
    )
    with running_service(env, log_path=log) as (base, _proc):
        yield base


def _stalled_head(base: str, user: str, length: int = 1000, origin: str | None = None) -> bytes:
    lines = [
        f"POST /api/{user}/tasks HTTP/1.1",
        f"Host: {host_port(base)[0]}",
        f"Authorization: Bearer {make_token(user)}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def _stalled_bodies(base: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that sent a head announcing 1000 bytes, then one byte, then nothing."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(host_port(base), timeout=5)
            socks.append(sock)
            sock.sendall(_stalled_head(base, "slow") + b"{")
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_stalled_bodies_hold_no_admission_slot(slow_service: str) -> None:
    """More stalled bodies than admission slots: another user's requests are served at once
    (without the deadline middleware they waited ADMISSION_TIMEOUT and got 503)."""
    victim = new_user_id()
    with _stalled_bodies(slow_service, SLOTS * 6 + 1), httpx.Client(timeout=10) as client:
        time.sleep(0.3)  # every stalled request has reached the app
        for _ in range(5):
            started = time.monotonic()
            response = client.get(f"{slow_service}/api/{victim}/tasks", headers=auth(victim))
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert elapsed < 1.0, f"a GET took {elapsed:.2f} s behind stalled bodies"
        started = time.monotonic()
        created = client.post(
            f"{slow_service}/api/{victim}/tasks", headers=auth(victim), json={"title": "t"}
        )
        assert created.status_code == 201, created.text
        assert time.monotonic() - started < 1.0


def test_stalled_body_is_answered_408_and_closed(slow_service: str) -> None:
    """408 in the envelope, with the request id and CORS headers, then the connection is closed,
    within the deadline + 1 s."""
    origin = "http://localhost:3000"
    with socket.create_connection(host_port(slow_service), timeout=5) as sock:
        sock.sendall(_stalled_head(slow_service, "slow", origin=origin) + b"{")
        started = time.monotonic()
        data, closed = read_until_closed(sock, timeout=BODY_TIMEOUT + 1)
        elapsed = time.monotonic() - started
    assert closed, f"the connection was still open after {elapsed:.2f} s"
    assert elapsed > BODY_TIMEOUT - 0.5
    status, headers, body = parse_response(data)
    assert status == 408
    assert json.loads(body) == {"status_code": 408, "detail": "Request body not received in time"}
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert headers["access-control-allow-origin"] == origin


def test_trickled_body_is_answered_408_at_the_deadline(slow_service: str) -> None:
    """One byte every 0.4 s resets nothing: the deadline runs from the end of the head."""
    with socket.create_connection(host_port(slow_service), timeout=5) as sock:
        sock.sendall(_stalled_head(slow_service, "slow"))
        started = time.monotonic()
        sock.settimeout(0.4)
        data = b""
        closed = False
        while time.monotonic() - started < BODY_TIMEOUT + 1:
            with contextlib.suppress(OSError):
                sock.sendall(b" ")
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        elapsed = time.monotonic() - started
    assert data, f"no answer after {elapsed:.2f} s of trickling"
    assert parse_response(data)[0] == 408
    assert closed, "the connection was kept open after the 408"


def test_bodies_within_the_deadline_are_unaffected(slow_service: str) -> None:
    user = new_user_id()
    headers = {**auth(user), "Content-Type": "application/json"}
    path = f"/api/{user}/tasks"
    # Whole, and split with a pause shorter than the deadline.
    status, _, body = raw_request(slow_service, "POST", path, headers, b'{"title": "whole"}')
    assert status == 201, body
    with socket.create_connection(host_port(slow_service), timeout=5) as sock:
        payload = b'{"title": "split"}'
        sock.sendall(_stalled_head(slow_service, user, len(payload)) + payload[:5])
        time.sleep(0.5)
        sock.sendall(payload[5:])
        sock.settimeout(5)
        status, _, body = parse_response(sock.recv(65536))
    assert status == 201, body
    # Chunked, strict JSON, and the size limit before authentication, as before.
    with httpx.Client(timeout=10) as client:
        chunked = client.post(
            f"{slow_service}{path}", headers=headers, content=iter([b'{"title":', b' "c"}'])
        )
        assert chunked.status_code == 201, chunked.text
        invalid = client.post(f"{slow_service}{path}", headers=headers, content=b'{"title": NaN}')
        assert invalid.status_code == 400, invalid.text
        big = b'{"title": "' + b"x" * 70_000 + b'"}'
        declared = client.post(f"{slow_service}{path}", content=big)
        assert declared.status_code == 413, declared.text
        streamed = client.post(f"{slow_service}{path}", headers=headers, content=iter([big]))
        assert streamed.status_code == 413, streamed.text
