"""The HTTP/1.1 server's protocol: uvicorn's httptools one, with bounded request heads.

The limits a public server needs (contract, "HTTP semantics"): a bounded request head, a
head-read deadline and a connection limit.

uvicorn with httptools has none of them: a head of any size is buffered (8 MB headers were
answered 200; 8 slow 16 MB heads added 160 MB of RSS), and a connection that sends nothing,
or one byte a second, is kept forever (its keep-alive timer only runs after a response).
h11 has a head limit but costs ~23 % CPU here; Granian was measured (README, "HTTP server").

`BoundedHttpToolsProtocol` is passed to uvicorn as `http="api.http_server:BoundedHttpToolsProtocol"`
(an import string, so `--workers` can spawn it). It relies on these uvicorn internals of
`HttpToolsProtocol`, pinned by tests/test_http_server.py (which fails when they change) and
by the `uvicorn` minor version in pyproject.toml: `connection_made`, `data_received`,
`on_header`, `on_headers_complete`, `on_message_complete`, `send_400_response`, and the
attributes `loop`, `transport`, `cycle` (`response_complete`, `keep_alive`), `connections`,
`app`, `headers`, `server_state.default_headers`.

Limits (api/settings.py, per process): HTTP_MAX_HEAD_BYTES (16 KiB), HTTP_MAX_HEADERS (100),
HTTP_HEAD_TIMEOUT_SECONDS (10 s), HTTP_MAX_CONNECTIONS (1024); the keep-alive timeout is
uvicorn's own `timeout_keep_alive` (HTTP_KEEP_ALIVE_TIMEOUT_SECONDS).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import RETRY_AFTER_SECONDS, envelope_bytes
from api.settings import get_settings

log = structlog.get_logger(__name__)

#: Reason phrases of the statuses written here (RFC 9110 §15; 431: RFC 6585 §5).
_REASONS: Final = {
    400: b"Bad Request",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """One process's limits: head size in bytes, header field count, head deadline in
    seconds, open connections (HTTP_MAX_HEAD_BYTES, HTTP_MAX_HEADERS,
    HTTP_HEAD_TIMEOUT_SECONDS, HTTP_MAX_CONNECTIONS)."""

    max_head_bytes: int
    max_headers: int
    head_timeout: float
    max_connections: int


@cache
def limits() -> HTTPLimits:
    """The limits of this process, from the settings (read once, in each worker, where the
    protocol is imported by uvicorn's import string). Raises what `get_settings` raises."""
    settings = get_settings()
    return HTTPLimits(
        max_head_bytes=settings.http_max_head_bytes,
        max_headers=settings.http_max_headers,
        head_timeout=settings.http_head_timeout_seconds,
        max_connections=settings.http_max_connections,
    )


def raw_error_response(
    status_code: int, detail: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A whole HTTP/1.1 response (bytes to write to the transport) with the JSON envelope,
    `Connection: close` and a fresh X-Request-ID, for answers given before there is a
    request to hand to the app. `default_headers` are uvicorn's (`date`, `server` when
    enabled); a 503 also gets `Retry-After` (contract: every error is the envelope, every
    response has an X-Request-ID)."""
    body = envelope_bytes(status_code, detail)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status_code, _REASONS.get(status_code, b""))]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-request-id: " + uuid.uuid4().hex.encode() + b"\r\n",
        b"connection: close\r\n",
    ]
    if status_code == 503:
        lines.append(b"retry-after: " + RETRY_AFTER_SECONDS.encode() + b"\r\n")
    lines += [b"\r\n", body]
    return b"".join(lines)


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """The app of a connection over HTTP_MAX_CONNECTIONS: 503 + Retry-After, then close."""
    body = envelope_bytes(503, "Too many connections, retry shortly")
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"retry-after", RETRY_AFTER_SECONDS.encode()),
                (b"x-request-id", uuid.uuid4().hex.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request heads are bounded in size and time.

    - At most `max_headers` header fields (HTTP_MAX_HEADERS, 100): more is 431 too.
    - Head bytes are counted as they arrive, before httptools buffers them; the parser is
      never fed more than `max_head_bytes` of one head. Past it: 431 in the envelope and
      the connection is closed (or only closed, if a pipelined response is being written).
    - From connect, and from the first byte of each later request, the head must be complete
      within `head_timeout` seconds, else the connection is closed (slowloris, and
      connections that never send anything). Idle time between requests is uvicorn's
      keep-alive timeout.
    - A connection beyond `max_connections` of this process gets 503 + Retry-After and is
      closed after its first request head.
    - uvicorn's plain-text 400 for a malformed request is the JSON envelope too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits()
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._too_many_headers = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head deadline; over `max_connections`, answer this connection 503."""
        super().connection_made(transport)
        self._arm_head_timer()
        if len(self.connections) > self._limits.max_connections:
            log.warning("http_connection_refused", connections=len(self.connections))
            self.app = _too_many_connections

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the head deadline, then uvicorn's own cleanup."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, but never more than `max_head_bytes` of one head (then 431)."""
        if not self._in_head:
            super().data_received(data)
            return
        if self._head_timer is None:
            self._arm_head_timer()
        room = self._limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what may still belong to this head; the rest once the head is complete.
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._in_head:
            self._reject_head()
            return
        self.data_received(data[room:])

    # --- httptools parser callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools callback: one header field; raises ValueError past `max_headers`."""
        if len(self.headers) >= self._limits.max_headers:
            # httptools stops parsing and raises HttpParserCallbackError from feed_data,
            # which uvicorn answers with send_400_response (below: our 431).
            self._too_many_headers = True
            raise ValueError(f"more than {self._limits.max_headers} header fields")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """httptools callback: the head is complete; its deadline and byte count stop."""
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """httptools callback: the body is complete; what follows is the next head."""
        super().on_message_complete()
        # Whatever arrives next on this connection is the head of its next request.
        self._in_head = True
        self._head_bytes = 0

    # --- uvicorn ------------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse: the 400 envelope and close
        (or 431 when it was too many header fields)."""
        if self._too_many_headers:
            self._reject_head()
            return
        self._cancel_head_timer()
        self.transport.write(raw_error_response(400, msg, self.server_state.default_headers))
        self.transport.close()

    # --- limits -------------------------------------------------------------------------------

    def _reject_head(self) -> None:
        """431 and close; only close while a pipelined response is still being written."""
        self._in_head = False
        self._cancel_head_timer()
        log.info("http_head_too_large", max_head_bytes=self._limits.max_head_bytes)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(
                raw_error_response(
                    431, "Request header fields too large", self.server_state.default_headers
                )
            )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """The head deadline passed: close now, or after the pipelined response in flight."""
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        log.info("http_head_timeout", head_bytes=self._head_bytes)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head: close once the response is out
        else:
            self.transport.close()
