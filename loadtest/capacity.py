"""Capacity: the service against the bare minimum (loadtest/ceiling/), side by side with wrk.

  uv run python -m loadtest.capacity                      # 3 interleaved runs, c=10 and c=100
  uv run python -m loadtest.capacity --smoke              # CI: ~2 s of load, fails only on errors
  uv run python -m loadtest.capacity --profile list       # + a py-spy flame graph of the service

Both apps run at once on loopback, each on its own fresh database (created, seeded with the same
users and tasks, dropped at the end), both pinned with `taskset` to one core and wrk to the
other. Each (endpoint, concurrency) is measured for the service, then for the ceiling (and
for a `--baseline` checkout of the service when asked), and that round is repeated `--runs`
times. Per measurement: requests/s from wrk; CPU ms per request from
/proc/<pid>/stat (utime + stime of the app's process tree) around the wrk run; PostgreSQL CPU
ms per request the same way for the whole server (postmaster and every child: backends,
WAL writer, ...; only when it runs on this machine, else `-`); database
transactions per request from pg_stat_database (xact_commit + xact_rollback of the app's own
database); non-2xx and socket errors from wrk, and a measurement with any is invalid (exit 1).
Speed never fails the command. Everything started is stopped; every wait has a deadline.

Exit status: 0 when every measurement was valid, 1 when one had errors or no requests, 2 for a
set-up error (e.g. wrk missing and not installable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python loadtest/capacity.py`
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from loadtest.common import mint_token  # noqa: E402
from loadtest.services import (  # noqa: E402
    database_name,
    free_port,
    fresh_database,
    running_service,
    service_env,
)
from repositories.database import prepare_database  # noqa: E402

REPORTS = ROOT / "loadtest" / "reports"
SCRIPT = ROOT / "loadtest" / "capacity.lua"
ENDPOINTS = ("list", "get", "create", "toggle")
# "baseline": the service from another checkout (--baseline DIR), to measure a change side by
# side with the same runs.
SYSTEMS = ("service", "baseline", "ceiling")
TASKS_PER_USER = 20
# pg_stat_database lags: a backend flushes its counters when it goes idle, but at most once a
# second (PostgreSQL 15 pgstat.c, PGSTAT_MIN_INTERVAL). A request made after that second
# makes each pool connection flush (see `App.settle`).
STATS_FLUSH_SECONDS = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measuring ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime in seconds of `pid` and every descendant alive now (from /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text[text.rindex(")") + 2 :].split()
            child = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(child)
            times[child] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += children.get(current, [])
    return total


def postmaster_pid(server_url: str) -> int | None:
    """The PID of the PostgreSQL server at `server_url` when it runs on this machine (its
    data directory's postmaster.pid is readable), else None."""
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row is not None
        return int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None


def transactions(server_url: str, dbname: str) -> int:
    """xact_commit + xact_rollback of `dbname`, read through the server's own database (so the
    reading is not counted)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else 0


def backends(server_url: str, dbname: str) -> int:
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float


def run_wrk(
    base: str, endpoint: str, connections: int, seconds: int, data: Path, core: str
) -> WrkResult:
    """wrk (one thread, pinned to `core`) for `seconds` against `base`; killed if it hangs."""
    cmd = [
        "taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout",
        "5s", "-s", str(SCRIPT), base, "--", str(data), endpoint,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("CAPACITY ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
    raw = json.loads(line.removeprefix("CAPACITY "))
    errors = sum(raw[k] for k in ("non_2xx", "connect", "read", "write", "timeout"))
    return WrkResult(
        raw["requests"], raw["duration_us"] / 1e6, errors, raw["p50_us"] / 1e3, raw["p99_us"] / 1e3
    )


@dataclass
class Measurement:
    system: str
    endpoint: str
    connections: int
    wrk: WrkResult
    cpu_seconds: float
    xact_before: int
    xact_per_request: float | None = None
    #: the whole PostgreSQL server's CPU during the run (None: not on this machine)
    db_cpu_seconds: float | None = None

    @property
    def rps(self) -> float:
        return self.wrk.requests / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def db_cpu_ms(self) -> float | None:
        if self.db_cpu_seconds is None or not self.wrk.requests:
            return None
        return 1000 * self.db_cpu_seconds / self.wrk.requests

    @property
    def valid(self) -> bool:
        return self.wrk.requests > 0 and self.wrk.errors == 0


@dataclass
class App:
    """One system under test (service, baseline or ceiling), running on its own database."""

    name: str
    base: str
    pid: int
    server_url: str
    dbname: str
    touch_path: str
    touch_headers: dict[str, str]
    postmaster: int | None = None
    last_load_end: float = 0.0
    pending: Measurement | None = None
    done: list[Measurement] = field(default_factory=list)

    def settle(self) -> int:
        """Make every pool connection flush its statistics; returns the transaction count.

        Waits until the last load is STATS_FLUSH_SECONDS old, then sends one request per
        connection: psycopg_pool hands out idle connections first in, first out, so each
        backend runs one and, its last flush being over a second old, flushes at once. What
        stays pending is at most one statement per connection. The open measurement is closed
        with the count (its touches and its last requests in flight are added to its requests).
        """
        time.sleep(max(0.0, self.last_load_end + STATS_FLUSH_SECONDS - time.monotonic()))
        touches = backends(self.server_url, self.dbname)
        with httpx.Client(base_url=self.base, timeout=10.0) as client:
            for _ in range(touches):
                client.get(self.touch_path, headers=self.touch_headers).raise_for_status()
        count = transactions(self.server_url, self.dbname)
        if self.pending is not None:
            m = self.pending
            # wrk stops with one request in flight on each connection (a closed loop): the
            # app still serves it, wrk does not count it.
            served = m.wrk.requests + m.connections + touches
            m.xact_per_request = (count - m.xact_before) / served
            self.done.append(m)
            self.pending = None
        return count

    def measure(self, endpoint: str, connections: int, seconds: int, data: Path) -> Measurement:
        xact = self.settle()
        db = cpu_seconds(self.postmaster) if self.postmaster else None
        cpu = cpu_seconds(self.pid)
        result = run_wrk(self.base, endpoint, connections, seconds, data, core="1")
        used = cpu_seconds(self.pid) - cpu
        db_used = cpu_seconds(self.postmaster) - db if self.postmaster and db is not None else None
        self.last_load_end = time.monotonic()
        self.pending = Measurement(
            self.name, endpoint, connections, result, used, xact, db_cpu_seconds=db_used
        )
        return self.pending


# --- set-up -------------------------------------------------------------------------------------


def ensure_wrk() -> None:
    """wrk from Debian's package when it is missing (needs root and apt-get)."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, timeout=600)


SEED = """
WITH u AS (
    INSERT INTO users (id) SELECT 'cap-' || g FROM generate_series(0, %(n)s - 1) AS g
    RETURNING id
)
INSERT INTO tasks (user_id, title, description, completed)
SELECT u.id, 'Seeded task ' || t, CASE WHEN t %% 2 = 0 THEN 'seeded description ' || t END,
       t %% 3 = 0
FROM u CROSS JOIN generate_series(1, %(k)s) AS t
"""


def migrate(database_url: str) -> None:
    """The service's own migrations, so that both apps see the same schema."""
    asyncio.run(prepare_database(database_url, startup_timeout=10.0, connect_timeout=5))


def seed(database_url: str, users: int) -> dict[str, list[int]]:
    """`users` users with TASKS_PER_USER tasks each; returns each user's task ids."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SEED, {"n": users, "k": TASKS_PER_USER})
        conn.execute("ANALYZE")
        rows = conn.execute(
            "SELECT user_id, array_agg(id ORDER BY id) FROM tasks GROUP BY user_id"
        ).fetchall()
    return {user: list(ids) for user, ids in rows}


def lua_data(path: Path, tasks: dict[str, list[int]], secret: str) -> None:
    """The users (their tokens and task ids) and the writers, as a Lua table for wrk."""
    users = sorted(tasks, key=lambda u: int(u.split("-")[1]))

    def entry(user: str, ids: list[int]) -> str:
        task_ids = ",".join(map(str, ids))
        return f'{{id="{user}",token="{mint_token(user, secret)}",tasks={{{task_ids}}}}}'

    lines = ["return {", "users = {"]
    lines += [entry(u, tasks[u]) + "," for u in users]
    lines += ["},", "writers = {"]
    lines += [entry(f"capw-{n}", []) + "," for n in range(len(users))]
    lines += ["}", "}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_same_work(apps: list[App], user: str, task: int, headers: dict[str, str]) -> None:
    """Both systems answer the list with the same 20 tasks and the get with the same task."""
    seen: list[Any] = []
    for app in apps:
        with httpx.Client(base_url=app.base, headers=headers, timeout=10.0) as client:
            listed = client.get(f"/api/{user}/tasks").raise_for_status().json()
            one = client.get(f"/api/{user}/tasks/{task}").raise_for_status().json()
        if len(listed) != TASKS_PER_USER or one["id"] != task:
            raise RuntimeError(f"{app.name}: unexpected answer ({len(listed)} tasks listed)")
        seen.append([t["id"] for t in listed])
    if seen[0] != seen[-1]:
        raise RuntimeError("the service and the ceiling list different tasks")


@contextlib.contextmanager
def started(
    name: str, server_url: str, secret: str, users: int, out: Path, baseline: Path | None
) -> Iterator[tuple[App, dict[str, list[int]]]]:
    """A fresh database (migrated, seeded) and the app `name` on it, pinned to core 0; the
    baseline runs `tasks-api serve` from the checkout `baseline` (`python -m` puts it first on
    sys.path)."""
    with fresh_database(server_url, prefix=f"capacity_{name}") as database_url:
        migrate(database_url)
        tasks = seed(database_url, users)
        port = free_port()
        if name in ("service", "baseline"):
            env = service_env(database_url, secret)
            command = ["taskset", "-c", "0", sys.executable, "-m", "api.cli", "serve",
                       "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
            ready = "/ready"
        else:
            env = {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": secret}
            command = ["taskset", "-c", "0", sys.executable, "-m", "uvicorn",
                       "loadtest.ceiling.app:app", "--host", "127.0.0.1", "--port", str(port),
                       "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                       "--log-level", "warning"]  # fmt: skip
            ready = "/openapi.json"
        cwd = baseline if name == "baseline" and baseline else ROOT
        with running_service(
            env, port=port, command=command, log_path=out / f"{name}.log", ready_path=ready,
            cwd=cwd,
        ) as (base, proc):  # fmt: skip
            user = "cap-0"
            app = App(
                name, base, proc.pid, server_url, database_name(database_url),
                f"/api/{user}/tasks", {"Authorization": f"Bearer {mint_token(user, secret)}"},
                postmaster_pid(server_url),
            )  # fmt: skip
            yield app, tasks


# --- reporting ----------------------------------------------------------------------------------


def spread(values: list[float], fmt: str) -> str:
    """`median (min..max)`, or `-` without values."""
    if not values:
        return "-"
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}..{fmt.format(max(values))})"
    )


def ratio(numerator: list[float], denominator: list[float]) -> str:
    if not numerator or not denominator or not statistics.median(denominator):
        return "-"
    return f"{statistics.median(numerator) / statistics.median(denominator):.2f}"


def table(measurements: list[Measurement], runs: int, seconds: float) -> str:
    """The markdown report: one row per (endpoint, concurrency, system), then the ratios."""
    keys = sorted(
        {(m.endpoint, m.connections) for m in measurements},
        key=lambda k: (ENDPOINTS.index(k[0]), k[1]),
    )

    def pick(endpoint: str, conns: int, system: str) -> list[Measurement]:
        return [
            m
            for m in measurements
            if (m.endpoint, m.connections, m.system) == (endpoint, conns, system)
        ]

    lines = [
        f"Medians (min..max) of {runs} interleaved run(s) of {seconds:g} s; wrk 1 thread.",
        "",
        "| endpoint | c | system | req/s | CPU ms/request | PostgreSQL CPU ms/request "
        "| DB transactions/request | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for endpoint, conns in keys:
        for system in SYSTEMS:
            ms = pick(endpoint, conns, system)
            if not ms:
                continue
            xact = [m.xact_per_request for m in ms if m.xact_per_request is not None]
            db_cpu = [m.db_cpu_ms for m in ms if m.db_cpu_ms is not None]
            lines.append(
                f"| {endpoint} | {conns} | {system} | {spread([m.rps for m in ms], '{:.0f}')} "
                f"| {spread([m.cpu_ms for m in ms], '{:.2f}')} | {spread(db_cpu, '{:.2f}')} "
                f"| {spread(xact, '{:.2f}')} "
                f"| {spread([m.wrk.p50_ms for m in ms], '{:.1f}')} "
                f"| {spread([m.wrk.p99_ms for m in ms], '{:.1f}')} "
                f"| {sum(m.wrk.errors for m in ms)} |"
            )
    others = [o for o in ("ceiling", "baseline") if any(m.system == o for m in measurements)]
    if not any(m.system == "service" for m in measurements) or not others:
        return "\n".join(lines)
    goals = {"ceiling": (" (goal >= 0.90)", " (goal <= 1.15)"), "baseline": ("", "")}
    head = "".join(
        f" req/s service / {o}{goals[o][0]} | CPU/request service / {o}{goals[o][1]} |"
        for o in others
    )
    lines += ["", f"| endpoint | c |{head}", "| --- | --- |" + " --- | --- |" * len(others)]
    for endpoint, conns in keys:
        service = pick(endpoint, conns, "service")
        cells = ""
        for other in others:
            theirs = pick(endpoint, conns, other)
            cells += (
                f" {ratio([m.rps for m in service], [m.rps for m in theirs])} |"
                f" {ratio([m.cpu_ms for m in service], [m.cpu_ms for m in theirs])} |"
            )
        lines.append(f"| {endpoint} | {conns} |{cells}")
    return "\n".join(lines)


# --- the command --------------------------------------------------------------------------------


def _py_spy(app: App, seconds: int, output: Path, fmt: str) -> subprocess.Popen[bytes]:
    cmd = [
        "taskset", "-c", "1", "uv", "tool", "run", "py-spy", "record", "--pid", str(app.pid),
        "--duration", str(seconds), "--rate", "250", "--output", str(output), "--format", fmt,
        "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


_LINE = re.compile(r":\d+\)$")


def where_time_went(raw: Path, top: int = 45) -> str:
    """From py-spy's collapsed stacks: the share of samples each function is on the stack of
    (inclusive), largest first, as `percent  function (file:line)` lines."""
    total = 0
    inclusive: dict[str, int] = {}
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        # By function: py-spy names each frame `function (file:line)`; the line goes.
        for frame in {_LINE.sub(")", f) for f in stack.split(";")}:
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"{100 * n / max(total, 1):5.1f}%  {frame}" for frame, n in ranked)


def profile_list(app: App, data: Path, seconds: int, out: Path, endpoint: str = "list") -> Path:
    """A py-spy flame graph (SVG) of `app` while wrk drives `endpoint` (list by default) at
    c=10 for `seconds`, then the same as collapsed stacks, summarised in `<app>-<endpoint>.txt`.

    py-spy comes from PyPI through `uv tool run` (not a project dependency); it samples the
    pinned app from the other core, beside wrk."""
    svg = out / f"{app.name}-{endpoint}.svg"
    raw = out / f"{app.name}-{endpoint}.raw"
    for output, fmt in ((svg, "flamegraph"), (raw, "raw")):
        spy = _py_spy(app, seconds, output, fmt)
        try:
            time.sleep(2.0)  # py-spy attaches (and uv installs it the first time) before the load
            run_wrk(app.base, endpoint, 10, seconds, data, core="1")
            _, err = spy.communicate(timeout=seconds + 120)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not output.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
    (out / f"{app.name}-{endpoint}.txt").write_text(where_time_went(raw) + "\n", encoding="utf-8")
    return svg


def measure_all(apps: list[App], args: argparse.Namespace, data: Path) -> list[Measurement]:
    for rep in range(args.runs):
        for endpoint in args.endpoints:
            for conns in args.connections:
                for app in apps:
                    m = app.measure(endpoint, conns, args.duration, data)
                    print(
                        f"[{rep + 1}/{args.runs}] {endpoint:<6} c={conns:<3} {app.name:<7} "
                        f"{m.rps:7.0f} req/s  {m.cpu_ms:5.2f} CPU ms/req  p99 {m.wrk.p99_ms:6.1f} "
                        f"ms  errors {m.wrk.errors}",
                        flush=True,
                    )
    for app in apps:
        app.settle()  # closes each app's last measurement
    return [m for app in apps for m in app.done]


def run(args: argparse.Namespace) -> int:
    ensure_wrk()
    out = REPORTS / time.strftime("%Y%m%d-%H%M%S-capacity")
    out.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    data = out / "users.lua"
    with contextlib.ExitStack() as stack:
        apps: list[App] = []
        for name in args.systems:
            app, tasks = stack.enter_context(
                started(name, args.server_url, secret, args.users, out, args.baseline)
            )
            apps.append(app)
        lua_data(data, tasks, secret)
        user, task = "cap-0", tasks["cap-0"][0]
        check_same_work(apps, user, task, apps[0].touch_headers)
        # Every connection of both pools opened, statements prepared, lazy imports done.
        for app in apps if args.warm_up else []:
            for endpoint in ENDPOINTS:
                run_wrk(app.base, endpoint, max(args.connections), args.warm_up, data, core="1")
            app.last_load_end = time.monotonic()
        measurements = measure_all(apps, args, data)
        for name in args.profile:
            target = next(a for a in apps if a.name == name)
            for endpoint in args.profile_endpoints:
                svg = profile_list(target, data, args.profile_seconds, out, endpoint)
                print(f"profile: {svg}", flush=True)
    report = table(measurements, args.runs, args.duration)
    (out / "capacity.md").write_text(report + "\n", encoding="utf-8")
    raw = [
        asdict(m) | {"rps": m.rps, "cpu_ms": m.cpu_ms, "db_cpu_ms": m.db_cpu_ms}
        for m in measurements
    ]
    (out / "measurements.json").write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    print(report)
    print(f"report: {out / 'capacity.md'}")
    invalid = [m for m in measurements if not m.valid]
    for m in invalid:
        print(f"INVALID: {m.system} {m.endpoint} c={m.connections}: {m.wrk}", file=sys.stderr)
    return 1 if invalid or not (measurements or args.profile) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server-url",
        default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL server (an existing database on it); fresh databases are made there",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="interleaved pairs per measurement (0: profiles only)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    parser.add_argument(
        "--warm-up", type=int, default=2, help="seconds per endpoint and app, once (0: none)"
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=["service", "ceiling"])
    parser.add_argument("--users", type=int, default=100, help="users rotated by wrk")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another revision (git worktree add DIR REV): with `--systems "
        "service baseline`, measures a change side by side",
    )
    parser.add_argument(
        "--profile", nargs="*", choices=SYSTEMS, default=[], help="py-spy flame graphs of list"
    )
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument(
        "--profile-endpoints",
        nargs="+",
        choices=ENDPOINTS,
        default=["list"],
        help="the endpoints --profile samples, one flame graph each (default: list)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="CI: list and toggle, 1 run of 1 s at c=10"
    )
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind: the apps are stopped, the databases dropped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    args = build_parser().parse_args(argv)
    if args.smoke:
        # wrk counts whole seconds: 2 endpoints x 2 systems x 1 s of load.
        args.runs, args.duration, args.warm_up, args.connections = 1, 1, 0, [10]
        args.users, args.endpoints = 10, ["list", "toggle"]
    try:
        return run(args)
    except (RuntimeError, subprocess.SubprocessError, psycopg.Error, httpx.HTTPError) as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
