"""Admission control: refuse early with 503 + Retry-After what cannot be served in time.

Contract, "HTTP semantics": a request that cannot be served in time is refused early with
503 and `Retry-After`, never answered late with a 500. Without this, 200 concurrent lists
with a pool of 2 were answered 500 after 1.5-11 s although DB_POOL_TIMEOUT=1: every request
was admitted, and the event loop, busy with all of them, noticed their pool timeouts late.

Pure ASGI and per process: at most `max_in_flight` requests run in the app; the others wait
in FIFO order for at most `timeout` seconds, and one whose expected wait (its place in the
queue times the recent service time) already exceeds that is refused at once. /health,
/ready and /metrics are never queued, so probes and scrapes answer under any load.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Final

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import Overloaded, response_for
from observability.metrics import REQUESTS_REFUSED

log = structlog.get_logger(__name__)

#: Probes and scrapes, answered whatever the load (with or without a trailing slash).
EXEMPT_PATHS: Final = frozenset({"/health", "/ready", "/metrics"})
#: Weight of the newest request in the service-time average.
_EWMA_WEIGHT: Final = 0.2


class AdmissionControl:
    """At most `max_in_flight` requests in `app` at once; a waiting request is refused with
    503 (`api.errors.Overloaded`) after `timeout` seconds, or at once when its expected wait
    is longer than that. `Retry-After` is the expected wait, rounded up, at least 1 s.

    Raises ValueError for `max_in_flight` < 1 or `timeout` <= 0. Refusals are counted in
    `tasks_http_requests_refused_total` by reason (`expected_wait`, `queue_timeout`) and
    logged as `request_refused`. `in_flight` counts the requests in the app (and the slots
    being handed over); `service_seconds` is the moving average of their time in it.
    """

    def __init__(self, app: ASGIApp, *, max_in_flight: int, timeout: float) -> None:
        if max_in_flight < 1 or timeout <= 0:
            raise ValueError("max_in_flight must be >= 1 and timeout > 0")
        self.app = app
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.in_flight = 0
        self.service_seconds = 0.0  # moving average of admitted requests' time in the app
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: admit the request (at once, or after a FIFO wait) or answer it 503 here."""
        if scope["type"] != "http" or scope["path"].rstrip("/") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
        else:
            expected = (len(self._waiters) + 1) / self.max_in_flight * self.service_seconds
            if expected > self.timeout:
                await self._refuse(scope, receive, send, "expected_wait", expected)
                return
            if not await self._wait_for_slot():
                await self._refuse(scope, receive, send, "queue_timeout", self.timeout)
                return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = loop.time() - started
            self.service_seconds += _EWMA_WEIGHT * (elapsed - self.service_seconds)
            self._release()

    async def _wait_for_slot(self) -> bool:
        """True once a finishing request handed its slot over; False after `timeout`."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            async with asyncio.timeout(self.timeout):
                await slot
            return True
        except TimeoutError:
            return self._abandon(slot)
        except BaseException:  # the client left (cancelled): give back what we were given
            if self._abandon(slot):
                self._release()
            raise

    def _abandon(self, slot: asyncio.Future[None]) -> bool:
        """Leave the queue; True when the slot was handed over just before (then it is ours)."""
        if slot.done() and not slot.cancelled():
            return True
        slot.cancel()
        with contextlib.suppress(ValueError):  # already handed on by _release
            self._waiters.remove(slot)
        return False

    def _release(self) -> None:
        """Hand the slot to the oldest waiter still waiting, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, reason: str, wait: float
    ) -> None:
        """Count, log and answer the 503, `Retry-After` being `wait` seconds rounded up."""
        REQUESTS_REFUSED.labels(reason=reason).inc()
        log.info("request_refused", reason=reason, in_flight=self.in_flight,
                 queued=len(self._waiters))  # fmt: skip
        retry_after = max(1, math.ceil(wait))
        await response_for(Overloaded(retry_after))(scope, receive, send)
