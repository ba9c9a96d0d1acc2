"""Process lifecycle: signals from the first instant, drain on SIGTERM, one place to run uvicorn.

The rules (README "Stopping: signals, drain and exit status"; contract "Running many
instances"):

* From the first line of `main()` SIGTERM and SIGINT raise `StopRequested`: a stop during the
  start-up database wait, the migrations or the embedded database's start ends the process
  within a second, also as PID 1 (where a signal without a handler is ignored by the kernel).
* While serving, the first SIGTERM/SIGINT starts the drain: `/ready` answers 503 at once, the
  instance keeps serving for `SHUTDOWN_DRAIN_SECONDS` so that a balancer polling `/ready`
  moves traffic away, then uvicorn's graceful shutdown runs (stop accepting, finish in-flight
  requests within `--graceful-timeout`, lifespan shutdown closes the pool) and the process
  exits 0.
* The same signal again during the drain or the shutdown stops at once: in-flight requests
  are cancelled (their transactions roll back), the pool gets at most 1 s to close, exit 0. Only the
  *same* signal forces: a terminal's Ctrl+C reaches the workers directly (SIGINT) and again
  through the supervisor (SIGTERM); those two together must still drain.
* A signal before the server has started (the lifespan is opening the pool) exits 0 at once:
  nothing has been served yet.

It relies on uvicorn internals (`Server.handle_exit`, `Server.on_tick`, `should_exit`,
`force_exit`, `started`; `supervisors.multiprocess.Process`/`Multiprocess`), which
`tests/test_lifecycle.py` checks without a server, so an upgrade that changes them fails fast.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final, NoReturn

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import ChangeReload, multiprocess

log = structlog.get_logger("tasks_api.lifecycle")

#: The signals that stop the service (uvicorn handles the same pair).
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

#: Seconds a forced stop (the signal again) gives the lifespan to close the pool.
FORCED_CLOSE_SECONDS: Final = 1.0

_draining = False


def is_draining() -> bool:
    """True once a stop was requested in this process: `/ready` then answers 503."""
    return _draining


def begin_drain() -> None:
    """Mark this process as draining (`/ready` → 503). Idempotent."""
    global _draining
    _draining = True


def reset_drain() -> None:
    """Back to serving (tests only: a process never leaves the drain)."""
    global _draining
    _draining = False


class StopRequested(BaseException):
    """Raised by the start-up signal handler: SIGTERM/SIGINT arrived before serving.

    A BaseException, so that no `except Exception` on the way (retry loops) swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signum)


def install_stop_handlers() -> None:
    """From now on SIGTERM/SIGINT raise `StopRequested` (until uvicorn installs its own).

    Called first thing in `main()`: as PID 1 a signal without a handler does nothing, and
    Python's default SIGINT handler would print a traceback.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with a drain before its graceful shutdown (rules in the module doc).

    `drain_seconds` (seconds, >= 0): how long to keep serving with `/ready` 503 after the
    first signal; 0 starts the graceful shutdown at once.
    """

    def __init__(self, config: uvicorn.Config, *, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.drain_deadline: float | None = None
        self.first_signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's handler for SIGTERM/SIGINT (`sig`), replaced to drain first.

        Before start-up completed: exit 0 at once. First signal: begin the drain (`/ready`
        503) and end it after `drain_seconds`. The same signal again: force (in-flight
        requests cancelled). Another signal during the drain is ignored (module doc).
        Returns None; on the first branch it never returns (`os._exit`).
        """
        # Not calling super(): uvicorn would record the signal and re-raise it after the
        # shutdown, ending the process as killed by it (status 143) instead of 0.
        name = signal.Signals(sig).name
        if not self.started:
            # The lifespan is still opening the pool: nothing served, nothing to finish.
            log.info("shutdown_requested", signal=name, phase="startup", exit_status=0)
            _flush_and_exit(0)
        if self.first_signal is None:
            self.first_signal = sig
            begin_drain()
            log.info("shutdown_requested", signal=name, drain_seconds=self.drain_seconds)
            if self.drain_seconds <= 0:
                self.should_exit = True
            else:
                # Polled by on_tick (every 0.1 s): a signal handler must not touch the loop.
                self.drain_deadline = time.monotonic() + self.drain_seconds
        elif sig == self.first_signal:
            log.warning("shutdown_forced", signal=name)
            self.should_exit = True
            self.force_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, then, when forced, the lifespan shutdown (the pool's close),
        bounded by FORCED_CLOSE_SECONDS; a close that takes longer is abandoned silently."""
        await super().shutdown(sockets)
        if self.force_exit:
            # uvicorn skips the lifespan shutdown when forced; asyncio.run would then cancel
            # the app inside its lifespan (a traceback, the pool never closed). Close it, but
            # never wait longer than FORCED_CLOSE_SECONDS for that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORCED_CLOSE_SECONDS):
                    await self.lifespan.shutdown()

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's main-loop tick (every 0.1 s): ends the drain once its deadline passed.
        Returns uvicorn's own answer (True: stop the main loop)."""
        if self.drain_deadline is not None and time.monotonic() >= self.drain_deadline:
            self.drain_deadline = None
            log.info("drain_finished", drain_seconds=self.drain_seconds)
            self.should_exit = True
        return await super().on_tick(counter)


def _flush_and_exit(status: int) -> None:
    # os._exit skips Python's buffered-stream flush: the last log lines would be lost.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def exit_now(status: int = 0) -> NoReturn:
    """Run the atexit handlers, flush, and end the process without the interpreter's teardown.

    Once the server has stopped everything is closed; tearing the interpreter down (module
    GC) still takes a second or more of CPU on a loaded host, which would delay the exit a
    supervisor or a container runtime waits for.
    """
    atexit._run_exitfuncs()
    logging.shutdown()
    _flush_and_exit(status)
    raise AssertionError("unreachable")


class DrainingProcess(multiprocess.Process):
    """A uvicorn worker process whose server is a `DrainingServer`.

    The instance is pickled into the spawned worker, so the drain travels as an attribute.
    """

    #: Set by `serve()` in the supervisor before any worker is created.
    default_drain_seconds: float = 5.0

    def __init__(self, config: uvicorn.Config, sockets: list[Any]) -> None:
        self.drain_seconds = DrainingProcess.default_drain_seconds
        super().__init__(config, sockets)

    def target(self, sockets: list[Any] | None = None) -> None:
        """The worker's main (in the spawned process): serve, then `exit_now(0)`; never
        returns once the server ran."""
        super().target(sockets)
        exit_now(0)  # the lifespan has closed the pool

    @property
    def server(self) -> uvicorn.Server:
        """This worker's `DrainingServer`, built on first use (in the spawned process)."""
        if self._server is None:
            self._server = DrainingServer(self.config, drain_seconds=self.drain_seconds)
        return self._server


class DrainingSupervisor(multiprocess.Multiprocess):
    """uvicorn's `--workers` supervisor, which forwards a second signal to the workers.

    uvicorn's supervisor sends SIGTERM to every worker on the first SIGTERM/SIGINT, then
    joins them without a bound, deaf to further signals: a second `kill` would never force.
    """

    def join_all(self) -> None:
        """Wait for every worker to end, forwarding each queued SIGTERM/SIGINT to the live
        ones (polled every 0.05 s per worker), so that the second signal forces them too."""
        while any(p.process.is_alive() for p in self.processes):
            for sig in tuple(self.signal_queue):
                self.signal_queue.remove(sig)
                if sig in STOP_SIGNALS:
                    for process in self.processes:
                        if process.process.is_alive() and process.pid is not None:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(process.pid, sig)
            for process in self.processes:
                process.process.join(timeout=0.05)
        for process in self.processes:
            process.join()


@contextlib.contextmanager
def _draining_workers(drain_seconds: float) -> Iterator[None]:
    # Multiprocess creates workers through the module's `Process` name (start, restart after
    # a crash, SIGHUP, SIGTTIN): swap it for the duration of the supervisor.
    saved = multiprocess.Process
    DrainingProcess.default_drain_seconds = drain_seconds
    multiprocess.Process = DrainingProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = saved  # type: ignore[misc]


def serve(config: uvicorn.Config, *, drain_seconds: float) -> None:
    """Run uvicorn as `uvicorn.run` does (one process, `--workers N` or `--reload`), draining.

    Returns when the server has stopped; raises SystemExit(3) (uvicorn's STARTUP_FAILURE)
    when the application or the socket failed to start.
    """
    server = DrainingServer(config, drain_seconds=drain_seconds)
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1:
        sock = config.bind_socket()
        with _draining_workers(drain_seconds):
            DrainingSupervisor(config, sockets=[sock]).run()
    else:
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)
