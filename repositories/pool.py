"""The psycopg connection pool: one per process, opened and closed in the app's lifespan.

Three jobs beyond psycopg_pool's own (API_CONTRACT.md, "Database faults"):

- **Prepared statements only on a connection the server confirms is direct.** psycopg names
  prepared statements `_pg3_0`, `_pg3_1`… alike on every client connection. Behind a
  transaction pooler that does not track them (PgBouncer < 1.21, or any version with
  `max_prepared_statements = 0`), a name runs on whichever server connection the pooler
  picked, where it may be another request's statement with the same parameters: a GET ran
  `delete_task` (issue 10). `probe_route` asks each new connection's server who it is
  talking to; only when it is us, on this very socket, may the connection prepare.
- **Every statement has a deadline**, the checkout check included (`execute_bounded`): when
  it passes, the statement is cancelled on the server and the connection closed, never
  reused, so a write answered with an error cannot be applied later by a queued query.
- **The checkout check only where it is needed** (`TasksPool`): a connection used within
  the last second whose socket has nothing unread is handed out unchecked; one round trip
  per request in steady state.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import select
import socket
import weakref
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from time import monotonic
from typing import Any, Final, LiteralString, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.rows import RowFactory
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.pool_async import AddConnection, MaintenanceTask

log = structlog.get_logger(__name__)

# DB_PREPARED_STATEMENTS: "auto", "on" or "off" (a str, so the settings enum passes as is).
PreparedMode = str
#: One result row, its values in the SELECT's column order, as psycopg's default row factory.
Row = tuple[Any, ...]

# psycopg's own default: a statement is prepared on its 5th execution on a connection.
PREPARE_THRESHOLD: Final = 5
# A connection returned this recently, with nothing unread on its socket, skips the checkout
# round trip. HikariCP's aliveBypassWindowMs is 500 ms; a request pair in a busy service is
# milliseconds apart, so 1 s loses nothing and catches a little more.
CHECK_BYPASS_SECONDS: Final = 1.0
# After a deadline: how long the cancel request may take, then how long the statement may
# take to end after it, before the socket is shut down. Their sum is reserved out of the
# request's deadline so that the answer still comes within it.
CANCEL_TIMEOUT: Final = 0.4
CANCEL_SETTLE: Final = 0.3
CLOSE_WAIT: Final = 0.2
CANCEL_BUDGET: Final = CANCEL_TIMEOUT + CANCEL_SETTLE + CLOSE_WAIT
# Every failure of the database or of the path to it, as opposed to an error of the SQL.
# "Prepared statement does not exist/already exists" can only mean a pooler swapped the
# server connection under us: the connection is discarded, never the request's data.
CONNECTION_FAILURES: Final = (
    psycopg.OperationalError,  # 08 connection, 53 resources, 57 operator intervention…
    psycopg.InterfaceError,  # the connection is closed or broken on our side
    psycopg.errors.InvalidSqlStatementName,  # 26000 prepared statement does not exist
    psycopg.errors.DuplicatePreparedStatement,  # 42P05 prepared statement already exists
    psycopg.errors.ProtocolViolation,
)

_ROUTE_SQL: Final = (
    "SELECT pg_backend_pid(), inet_server_port(), inet_client_addr(), inet_client_port()"
)
# Strong references to clean-up tasks: the event loop keeps only weak ones (asyncio docs,
# "Important: Save a reference to the result of this function").
_background: set[asyncio.Task[Any]] = set()


class StatementTimeout(Exception):
    """A statement (or the checkout check) did not finish within its deadline; it was
    cancelled and its connection closed. The repository answers it as DatabaseUnavailable
    (contract, "Database faults": 500 + Retry-After within DB_STATEMENT_TIMEOUT)."""


@dataclass(frozen=True)
class Route:
    """What the server said about a connection: `direct` means no pooler sits between;
    `reason` is one human-readable sentence for the `db_connection` log event."""

    direct: bool
    reason: str


def connection_kwargs(
    *,
    prepare_threshold: int | None,
    connect_timeout: int,
    statement_timeout: float = 5.0,
    application_name: str = "tasks-api",
) -> dict[str, Any]:
    """Per-connection settings (libpq parameters and psycopg's `autocommit` and
    `prepare_threshold`), as the pool's `kwargs`. Autocommit: each call is one statement.

    `prepare_threshold`: executions before psycopg prepares a statement (None: never);
    `connect_timeout`: whole seconds, libpq's; `statement_timeout`: seconds, only to size
    `tcp_user_timeout`.

    Keepalives notice a peer that vanished while the connection was idle within about
    30 + 3 * 5 s; `tcp_user_timeout` (milliseconds, Linux) drops a connection whose sent
    data stays unacknowledged longer than a statement may run, instead of the kernel's
    ~15 minutes of retransmissions. Both are ignored on a unix socket.
    """
    return {
        "autocommit": True,
        "prepare_threshold": prepare_threshold,
        "connect_timeout": connect_timeout,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": int((statement_timeout + 5.0) * 1000),
    }


def _local_endpoint(conn: AsyncConnection[Any]) -> tuple[Any, int] | None:
    """Our side of the connection's TCP socket as (address, port); None for a unix socket."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return None
    sock = socket.socket(fileno=os.dup(fd))
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = sock.getsockname()[:2]
    finally:
        sock.close()
    return _ip(host), int(port)


def _ip(value: Any) -> Any:
    """An address (str or ipaddress object, maybe with a `%zone`) as an ipaddress object,
    IPv4-mapped IPv6 as IPv4: the server and our socket may spell the same peer either way."""
    addr = ipaddress.ip_address(str(value).split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


async def probe_route(conn: AsyncConnection[Any], *, within: float) -> Route:
    """Ask the server who it is talking to, and compare with what this connection knows.

    Direct only when all of these hold (one round trip): the backend pid the server reports
    is the one in the BackendKeyData this connection received at start-up (PgBouncer,
    Supavisor, pgcat, Odyssey and Neon's proxy hand out keys of their own: checked with
    PgBouncer 1.18, whose key carried pid 478424759 for backend 12425); and the server sees
    the client at our socket's own address and port and accepts on the port we dialled
    (a proxy has a socket of its own). Anything unverifiable, a unix socket included,
    counts as pooled: the safe side.

    `within` is the deadline in seconds. Raises StatementTimeout or psycopg's error (the new
    connection is then discarded by the pool).
    """
    rows = await execute_bounded(conn, _ROUTE_SQL, None, within=within, prepare=False)
    pid, server_port, client_addr, client_port = rows[0]
    if pid != conn.info.backend_pid:
        return Route(False, f"backend pid {pid} is not {conn.info.backend_pid} from the key data")
    if client_addr is None or client_port is None:
        return Route(False, "not over TCP: the server cannot confirm the peer")
    local = _local_endpoint(conn)
    if local is None:
        return Route(False, "no local TCP endpoint to compare")
    seen = (_ip(client_addr), int(client_port))
    if seen != local:
        return Route(False, f"the server sees the client at {seen}, this socket is {local}")
    if server_port != conn.info.port:
        return Route(False, f"the server listens on {server_port}, we dialled {conn.info.port}")
    return Route(True, "backend pid and both TCP endpoints confirmed by the server")


# --- statements with a deadline ---------------------------------------------------------


def _shutdown_socket(conn: AsyncConnection[Any]) -> None:
    """End the TCP/unix connection for the peer at once, without closing our descriptor.

    The event loop may still be watching the descriptor (the statement's wait), so it is
    not closed under it: `shutdown` makes the peer see end-of-file (PgBouncer then drops a
    query still queued for a server) and makes our pending read fail at once.
    """
    with suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


T = TypeVar("T")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a detached task's outcome as seen (its caller may have stopped waiting)."""
    if not task.cancelled():
        task.exception()


def detach(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run `coro` (statements through the pool) in a task of its own, kept referenced and
    its outcome retrieved. Await it through `asyncio.shield`: cancelling the waiter (e.g.
    `/ready`'s own 2 s timeout) then stops only the wait, never psycopg's
    (`execute_bounded`), and the task ends by its statements' own deadlines."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(_retrieve)
    return task


class _Deadline:
    """The deadline of one statement in `execute_bounded`: a timer, and what it started."""

    __slots__ = ("caller", "cancelled_caller", "cleanup", "conn", "finished")

    def __init__(self, conn: AsyncConnection[Any], caller: asyncio.Task[Any] | None) -> None:
        self.conn = conn
        self.caller = caller
        self.finished: asyncio.Future[None] | None = None  # set once the statement is over
        self.cleanup: asyncio.Task[None] | None = None  # _cancel_then_shut_down, once fired
        self.cancelled_caller = False

    @property
    def fired(self) -> bool:
        return self.cleanup is not None

    def expire(self) -> None:
        """The timer's callback: start stopping the statement, in a task of its own."""
        self.finished = asyncio.get_running_loop().create_future()
        self.cleanup = asyncio.ensure_future(self._cancel_then_shut_down(self.finished))
        _background.add(self.cleanup)
        self.cleanup.add_done_callback(_background.discard)

    async def _cancel_then_shut_down(self, finished: asyncio.Future[None]) -> None:
        """Cancel the statement on the server (CANCEL_TIMEOUT), give it CANCEL_SETTLE to
        end, then shut the socket down so that the caller's wait ends at once (CLOSE_WAIT).
        Bounded by CANCEL_BUDGET."""
        with suppress(Exception):
            await asyncio.wait_for(self.conn.cancel_safe(timeout=CANCEL_TIMEOUT), CANCEL_TIMEOUT)
        await asyncio.wait({finished}, timeout=CANCEL_SETTLE)
        if not finished.done():
            _shutdown_socket(self.conn)
            await asyncio.wait({finished}, timeout=CLOSE_WAIT)
        if not finished.done() and self.caller is not None:
            # Last resort, never seen: psycopg's own cancellation handling, itself bounded
            # (a 5 s cancel, then 5 s for the statement, then the connection is finished).
            self.cancelled_caller = True
            self.caller.cancel()

    def over(self, timer: asyncio.TimerHandle) -> None:
        """The statement is over (any outcome, a cancellation included): stop the timer, and
        tell a running clean-up, so that it never touches the caller again."""
        timer.cancel()
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def settle(self) -> None:
        """After `over`, once the deadline fired: let the clean-up end, then close the
        connection for good. A cancel request can arrive after the statement finished, so
        a connection is never reused after one (it could cancel the next statement)."""
        if self.cleanup is not None:
            with suppress(Exception):
                await self.cleanup
        with suppress(Exception):
            await self.conn.close()


async def execute_bounded(
    conn: AsyncConnection[Any],
    query: LiteralString,
    params: dict[str, Any] | None,
    *,
    within: float,
    prepare: bool | None = None,
    row_factory: RowFactory[Any] | None = None,
) -> list[Any]:
    """Run one statement; its rows (empty for none). Raises StatementTimeout after `within`
    seconds (plus at most CANCEL_BUDGET to cancel it and close the connection), or the
    driver's error.

    The statement runs in the caller's task, watched by a timer (`_Deadline`) rather than
    by a cancellation: cancelling a task inside psycopg's wait makes psycopg wait up to
    5 + 5 s for the server to confirm a cancel, which a silent server (a paused PgBouncer)
    never does. At the deadline the timer cancels the statement on the server and then
    shuts the socket down, so the wait ends with the statement's result or an error, and
    the connection is closed, never reused. (It ran in a task of its own before: two more
    turns of the event loop per statement, 12 % of the toggle's throughput at c=10,
    loadtest/README.md.) Callers bound it with `within`, never by cancelling it: one that
    must stop waiting sooner awaits it in a task of its own (`detach`). A caller cancelled
    anyway gets psycopg's own bounded handling, and the connection closed.
    """
    deadline = _Deadline(conn, asyncio.current_task())
    timer = asyncio.get_running_loop().call_later(max(within, 0.0), deadline.expire)
    try:
        cur = conn.cursor(row_factory=row_factory) if row_factory else conn.cursor()
        await cur.execute(query, params, prepare=prepare)
        rows = await cur.fetchall() if cur.description is not None else []
    except asyncio.CancelledError:
        deadline.over(timer)
        if deadline.cancelled_caller:  # our own last resort: report the deadline
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await deadline.settle()
            raise StatementTimeout(f"statement not finished within {within:.2f}s") from None
        with suppress(Exception):
            await conn.close()  # psycopg's handler sent a cancel: never reuse it
        raise
    except Exception as exc:
        deadline.over(timer)
        if not deadline.fired:
            raise
        await deadline.settle()
        raise StatementTimeout(f"statement not finished within {within:.2f}s; cancelled") from exc
    deadline.over(timer)
    if deadline.fired:
        # It finished while being cancelled: its result stands (a write did commit), and
        # reporting it is more truthful than an error the client would retry.
        await deadline.settle()
    return rows


# --- the pool -------------------------------------------------------------------------


def _socket_is_quiet(conn: AsyncConnection[Any]) -> bool:
    """Nothing has arrived on this idle connection (no error message, no end-of-file).

    A terminated backend (Neon's suspend, pg_terminate_backend, a restart) sends FATAL and
    closes; that makes the socket readable long before a query would find out.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class TasksPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """psycopg_pool's pool with deadlines on every check, a cheaper checkout, a capped backoff.

    It overrides private methods of psycopg_pool 3.3 (`_getconn_with_check_loop`,
    `_getconn_unchecked`, `_putconn`, `schedule_task`, `AddConnection`, `MaintenanceTask`);
    pyproject.toml bounds psycopg-pool to 3.3.x and `tests/test_pool_internals.py` fails
    when those names or signatures change. Upstream would need, to drop the override:
    a deadline for the `check` callback (today a check on a silent server blocks a request
    past `timeout`), a "skip the check if used within N ms" option (HikariCP's
    aliveBypassWindowMs), a switch for the 1 s, 2 s, 4 s… sleep between failed checks, and
    a ceiling for the reconnection backoff.

    Connections whose check fails are replaced back to back: psycopg_pool sleeps with backoff
    after each one, so after Neon's suspend (every idle connection dead at once) the first
    request slept through one delay per dead connection and ran out of DB_POOL_TIMEOUT.

    `prepared_statements` is DB_PREPARED_STATEMENTS (`auto`, `on`, `off`) and
    `statement_timeout` DB_STATEMENT_TIMEOUT in seconds; the other keyword arguments are
    AsyncConnectionPool's, except `configure`, which this class sets.
    """

    # Reconnection backs off 1 s, 2 s, 4 s… without a ceiling: after a one-minute outage
    # the next attempt could be a minute away. Attempts keep their backoff, capped here.
    MAX_RECONNECT_DELAY = 2.0

    def __init__(
        self,
        conninfo: str,
        *,
        prepared_statements: PreparedMode = "auto",
        statement_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.prepared_statements: PreparedMode = prepared_statements
        self.statement_timeout = statement_timeout
        self._returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        #: connections running a statement now (`execute`, the checkout check, a new
        #: connection's set-up): `close` ends them at once
        self._running: set[AsyncConnection[Any]] = set()
        super().__init__(conninfo, configure=self._configure_connection, **kwargs)

    @contextmanager
    def _running_on(self, conn: AsyncConnection[Any]) -> Iterator[None]:
        """While in it, `conn` runs a statement that `close` must end at once."""
        self._running.add(conn)
        try:
            yield
        finally:
            self._running.discard(conn)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (psycopg_pool's)
        """Close the pool (psycopg_pool's close, `timeout` seconds). Statements still running
        end first, their sockets shut down: their requests answer 500 + Retry-After at once.
        Left running, they would be cancelled with their tasks as the process exits, and
        psycopg's cancel handling waits up to 5 + 5 s on a silent database (red team: a
        forced stop took 5.5 s instead of 1 s)."""
        for conn in list(self._running):
            _shutdown_socket(conn)
        await super().close(timeout)

    async def _configure_connection(self, conn: AsyncConnection[Any]) -> None:
        """Once per new connection: decide prepared statements and the server-side timeout.

        Raises StatementTimeout or psycopg's error, on which psycopg_pool discards the
        connection and tries again with backoff. Its statements count as running for
        `close` (a pool worker cancelled inside them would wait out psycopg's 5 s cancel).
        """
        with self._running_on(conn):
            await self._set_up(conn)

    async def _set_up(self, conn: AsyncConnection[Any]) -> None:
        if self.prepared_statements == "off":
            conn.prepare_threshold = None
            log.info("db_connection", direct=None, prepared=False, reason="off")
            return
        route = await probe_route(conn, within=self.statement_timeout)
        if route.direct:
            # Directly on PostgreSQL the server enforces the deadline too, and a cancelled
            # statement comes back as QueryCanceled. Behind a pooler a session SET would
            # leak to other clients' transactions, so the client-side deadline alone holds.
            await execute_bounded(
                conn,
                "SELECT set_config('statement_timeout', %(ms)s, false)",
                {"ms": f"{int(self.statement_timeout * 1000)}"},
                within=self.statement_timeout,
                prepare=False,
            )
        else:
            conn.prepare_threshold = None
            if self.prepared_statements == "on":
                # Start-up refused this (repositories/database.py); the route changed since.
                log.error("db_prepared_statements_refused", reason=route.reason)
        log.info(
            "db_connection",
            direct=route.direct,
            prepared=conn.prepare_threshold is not None,
            reason=route.reason,
        )

    async def schedule_task(self, task: MaintenanceTask, delay: float) -> None:
        """psycopg_pool's scheduling, with a reconnection's `delay` (seconds) capped at
        MAX_RECONNECT_DELAY."""
        if isinstance(task, AddConnection):
            delay = min(delay, self.MAX_RECONNECT_DELAY)
        await super().schedule_task(task, delay)

    async def putconn(self, conn: AsyncConnection[Any]) -> None:
        """Return `conn` to the pool, noting when (for the checkout-check bypass)."""
        self._returned_at[conn] = monotonic()
        await super().putconn(conn)

    def _fresh(self, conn: AsyncConnection[Any]) -> bool:
        """Returned within CHECK_BYPASS_SECONDS with nothing unread: safe to hand out unchecked."""
        returned = self._returned_at.get(conn)
        return (
            returned is not None
            and monotonic() - returned < CHECK_BYPASS_SECONDS
            and _socket_is_quiet(conn)
        )

    async def _getconn_with_check_loop(self, deadline: float) -> AsyncConnection[Any]:
        """psycopg_pool's checkout loop (called by `getconn`), ending by `deadline`
        (monotonic): a connection that is fresh or passes a bounded empty query; a failing
        one is discarded and the next tried at once. Raises PoolTimeout once `deadline` has
        passed."""
        while True:
            conn = await self._getconn_unchecked(deadline - monotonic())
            if self._fresh(conn):
                return conn
            try:
                # The check is bounded like any statement: a silent server (a paused
                # PgBouncer) would otherwise hold the request past DB_POOL_TIMEOUT.
                with self._running_on(conn):
                    await execute_bounded(
                        conn,
                        "",
                        None,
                        within=min(self.statement_timeout, max(deadline - monotonic(), 0.1)),
                    )
            except Exception:
                await self._putconn(conn, from_getconn=True)
                if monotonic() >= deadline:
                    raise PoolTimeout() from None
                continue
            except BaseException:
                await self._putconn(conn, from_getconn=True)
                raise
            return conn

    async def execute(
        self,
        query: LiteralString,
        params: dict[str, Any],
        *,
        deadline: float,
        row_factory: RowFactory[Any] | None = None,
    ) -> list[Any]:
        """Borrow a connection, run one statement, give the connection back; its rows
        (tuples, or what `row_factory` makes of them).

        `deadline` is a `time.monotonic()` instant: the checkout waits at most DB_POOL_TIMEOUT
        and the statement at most DB_STATEMENT_TIMEOUT, both cut to end CANCEL_BUDGET before
        it. Raises PoolTimeout, StatementTimeout, or psycopg's error. After a timeout or a
        connection failure the connection is closed, never reused.
        """
        remaining = deadline - monotonic() - CANCEL_BUDGET
        conn = await self.getconn(timeout=min(self.timeout, max(remaining, 0.0)))
        within = min(self.statement_timeout, deadline - monotonic() - CANCEL_BUDGET)
        try:
            with self._running_on(conn):
                rows = await execute_bounded(
                    conn, query, params, within=within, row_factory=row_factory
                )
        except asyncio.CancelledError:
            # execute_bounded closed it (psycopg's handler may have sent a cancel).
            _hand_back_later(self, conn)
            raise
        except StatementTimeout:
            await self.putconn(conn)  # closed already: the pool replaces it
            raise
        except CONNECTION_FAILURES:
            with suppress(Exception):
                await conn.close()
            await self.putconn(conn)
            raise
        except BaseException:
            await self.putconn(conn)
            raise
        await self.putconn(conn)
        return rows


def _hand_back_later(pool: TasksPool, conn: AsyncConnection[Any]) -> None:
    """Give `conn` back to `pool`, closed (execute_bounded closed it already), from a task of
    its own: a cancelled request must not leak a slot."""

    async def later() -> None:
        with suppress(Exception):
            await conn.close()
        with suppress(Exception):
            await pool.putconn(conn)

    detach(later())


def build_pool(
    conninfo: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    connect_timeout: int,
    prepared_statements: PreparedMode = "auto",
    statement_timeout: float = 5.0,
) -> TasksPool:
    """The service's pool; `timeout` and `statement_timeout` in seconds (DB_POOL_TIMEOUT,
    DB_STATEMENT_TIMEOUT), `connect_timeout` in whole seconds; `min_size`/`max_size`
    connections (DB_POOL_MIN, DB_POOL_MAX). `prepared_statements`: `off` never prepares;
    `auto` and `on` prepare only on a connection `probe_route` confirms is direct (contract,
    "Database faults"). Not opened: the lifespan opens it (`await pool.open()`)."""
    return TasksPool(
        conninfo,
        prepared_statements=prepared_statements,
        statement_timeout=statement_timeout,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name="tasks-api",
        # Neon closes idle connections when it suspends; don't keep more than needed.
        max_idle=300.0,
        max_lifetime=1800.0,
        # Keep trying to reconnect through an outage; requests fail fast meanwhile.
        reconnect_timeout=3600.0,
        kwargs=connection_kwargs(
            prepare_threshold=None if prepared_statements == "off" else PREPARE_THRESHOLD,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        ),
    )
