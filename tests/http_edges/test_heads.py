"""Contract, "HTTP semantics": the request head is at most 16 KiB (431 or a closed
connection) without memory growing with what a client sends; a head not complete within
10 s is disconnected; idle and slow connections delay no one; idle keep-alive connections
are closed after HTTP_KEEP_ALIVE_TIMEOUT_SECONDS. Against a real `tasks-api serve`."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx

from tests.http_edges.conftest import connection, host_port, read_until_closed

HEAD_TIMEOUT = 10.0  # HTTP_HEAD_TIMEOUT_SECONDS's default


def _refused_or_closed(base: str, head: bytes) -> None:
    with connection(base) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed while we were still sending: allowed ("431 or close")
        data, closed = read_until_closed(sock, timeout=10)
    assert closed, "the connection stayed open"
    if data:
        status_line, _, rest = data.partition(b"\r\n")
        assert status_line.split()[1] == b"431", data[:200]
        body = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert body == {"status_code": 431, "detail": "Request header fields too large"}
        assert b"content-type: application/json" in rest.lower()


def test_a_20_kib_header_is_refused(service: str) -> None:
    _refused_or_closed(
        service, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20 * 1024 + b"\r\n\r\n"
    )
    # ... and so is a request line of that size.
    _refused_or_closed(
        service, b"GET /health?" + b"a" * 20 * 1024 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )


def test_200_headers_are_refused(service: str) -> None:
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    _refused_or_closed(service, b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")


def test_a_head_just_under_the_limit_is_served(service: str) -> None:
    response = httpx.get(f"{service}/health", headers={"X-Big": "a" * 15 * 1024})
    assert response.status_code == 200
    fields = {f"X-H{i}": "v" for i in range(90)}
    assert httpx.get(f"{service}/health", headers=fields).status_code == 200


def _server_pid(base: str) -> int:
    # The single-process server listens itself: find it by its port in /proc/net/tcp.
    port = host_port(base)[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1].endswith(f":{port:04X}") and parts[3] == "0A":  # LISTEN
            inode = parts[9]
    assert inode, "listening socket not found"
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if fd.readlink().as_posix() == f"socket:[{inode}]":
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    raise AssertionError("server process not found")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_does_not_grow_with_eight_slow_16_mb_heads(service: str) -> None:
    pid = _server_pid(service)
    before = _rss_bytes(pid)
    peak = before
    chunk = b"a" * (512 * 1024)

    def slow_head() -> None:
        with socket.create_connection(host_port(service), timeout=10) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(32):  # 16 MiB, in 512 KiB steps
                    sock.sendall(chunk)
                    time.sleep(0.05)
                sock.sendall(b"\r\n\r\n")
                read_until_closed(sock, timeout=5)
            except OSError:
                pass  # refused and closed: what we want

    threads = [threading.Thread(target=slow_head) for _ in range(8)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss_bytes(pid))
        time.sleep(0.05)
    growth = peak - before
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"
    assert httpx.get(f"{service}/health").status_code == 200


async def _open_idle(
    base: str, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = host_port(base)
    return [await asyncio.open_connection(host, port) for _ in range(count)]


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def _slowloris(base: str, seconds: float) -> float | None:
    """Send a head one byte a second; the time until the server closed, or None."""
    host, port = host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    closed = asyncio.ensure_future(_closed_within(reader, seconds))
    try:
        for byte in head:
            if closed.done():
                break
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([closed], timeout=1.0)
        if await closed:
            return time.monotonic() - started
        return None
    finally:
        writer.close()


async def test_slow_and_idle_connections_are_closed_and_delay_no_one(service: str) -> None:
    """500 connections that never send a byte and 5 slowloris ones (1 byte/s) are closed
    within 15 s, while 50 normal requests meanwhile all succeed with p99 < 1 s."""
    idle = await _open_idle(service, 500)
    slow = [asyncio.ensure_future(_slowloris(service, 15.0)) for _ in range(5)]
    await asyncio.sleep(1.0)
    latencies = []
    async with httpx.AsyncClient(base_url=service, timeout=5) as client:
        for _ in range(50):
            started = time.monotonic()
            response = await client.get("/health")
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.05)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 1.0, f"p99 {p99:.3f}s"
    closed = await asyncio.gather(*(_closed_within(r, 15.0) for r, _ in idle))
    for _, writer in idle:
        writer.close()
    assert all(closed), f"{closed.count(False)} of 500 idle connections still open after 15 s"
    slow_closed_after = await asyncio.gather(*slow)
    assert all(t is not None and t <= 15.0 for t in slow_closed_after), slow_closed_after
    assert all(t is not None and t >= HEAD_TIMEOUT - 1 for t in slow_closed_after)


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    service: str,
) -> None:
    """The module's server runs with HTTP_KEEP_ALIVE_TIMEOUT_SECONDS=2."""
    with connection(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        data, closed = read_until_closed(sock, timeout=6)
    assert closed and data == b""
    assert 1.5 <= time.monotonic() - started <= 4.0
