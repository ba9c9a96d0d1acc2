"""What an unchanged poll costs the service: `If-None-Match` (304) against the full list.

  uv run python -m loadtest.bench_conditional \\
      --database-url postgresql://postgres@127.0.0.1:5432/postgres [--tasks 1000] [--repeat 3]

Starts `tasks-api serve` (one process, loopback, a database of its own, dropped after), seeds
one user with `--tasks` tasks in SQL, then, in interleaved rounds, sends `--requests`
sequential GETs of that user's list of each kind over one keep-alive connection:

  full   no If-None-Match: 200 and the whole list (what a poll costs today)
  poll   If-None-Match with the current tag: 304, no body
  stale  If-None-Match with an old tag: 200 and the whole list, still one round trip

and reads the service's CPU time (utime + stime of its process, /proc/PID/stat) before and
after each batch. Prints per kind the median CPU milliseconds per request over the rounds with
their range, and the poll/full ratio; exits 1 when that ratio is over `--bound` (the issue's
0.25), 0 otherwise. Nothing but loopback is used; the service and database are always removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import jwt
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-conditional-secret-" + "x" * 40
USER = "bench-poll-user"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("full", "poll", "stale")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (proc(5): fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"bench_conditional_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def service(database_url: str, port: int) -> Iterator[int]:
    """`tasks-api serve` on 127.0.0.1:port; yields its PID, stops it (SIGTERM, then kill)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the service was not ready within 60 s")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed(database_url: str, tasks: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, tasks_version) VALUES (%s, 2)", (USER,))
        conn.execute(
            "INSERT INTO tasks (user_id, title, description, completed)"
            " SELECT %s, 'Task number ' || g || ' with a title',"
            "        CASE WHEN g %% 3 = 0 THEN NULL ELSE repeat('a description ', 4) END,"
            "        g %% 2 = 0"
            " FROM generate_series(1, %s) AS g",
            (USER, tasks),
        )
        conn.execute("ANALYZE tasks")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: argparse.Namespace) -> int:
    port = free_port()
    token = jwt.encode(
        {"sub": USER, "iat": int(time.time()), "exp": int(time.time()) + 3600}, SECRET
    )
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with fresh_database(args.database_url) as url, service(url, port) as pid:
        seed(url, args.tasks)
        base = f"http://127.0.0.1:{port}/api/{USER}/tasks"
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            first = client.get(base)
            first.raise_for_status()
            assert len(first.json()) == args.tasks
            current = first.headers["etag"]
            # A tag of this list one version ago: what a client holds after a change.
            stale = client.get(base, headers={"If-None-Match": '"1-0000000000000000"'})
            assert stale.status_code == 200
            headers = {"full": {}, "poll": {"If-None-Match": current}}
            headers["stale"] = {"If-None-Match": '"1-0000000000000000"'}
            expected = {"full": 200, "poll": 304, "stale": 200}
            for kind in KINDS:  # warm-up: prepared statements, caches
                for _ in range(50):
                    assert client.get(base, headers=headers[kind]).status_code == expected[kind]
            for _ in range(args.repeat):
                for kind in KINDS:
                    before = cpu_seconds(pid)
                    for _ in range(args.requests):
                        response = client.get(base, headers=headers[kind])
                        assert response.status_code == expected[kind], response.status_code
                    spent = cpu_seconds(pid) - before
                    samples[kind].append(1000 * spent / args.requests)
    print(
        f"list of {args.tasks} tasks, {args.requests} sequential requests per batch, "
        f"{args.repeat} interleaved rounds; service CPU ms per request"
    )
    print("| request | median | min..max |")
    print("| --- | --- | --- |")
    for kind in KINDS:
        values = samples[kind]
        print(
            f"| {kind} | {statistics.median(values):.3f} | {min(values):.3f}..{max(values):.3f} |"
        )
    ratio = statistics.median(samples["poll"]) / statistics.median(samples["full"])
    worst = max(samples["poll"]) / min(samples["full"])
    verdict = "within" if ratio <= args.bound else "OVER"
    print(f"poll/full: {ratio:.3f} (worst pairing {worst:.3f}), {verdict} the bound {args.bound}")
    return 0 if ratio <= args.bound else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server URL")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200, help="per batch")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (>= 3 for a spread)")
    parser.add_argument("--bound", type=float, default=0.25)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
