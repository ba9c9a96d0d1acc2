"""The database path over a direct connection: before (a git ref, default `main`) vs now.

What issue 10 must not lose: directly on PostgreSQL, prepared statements stay on (they were
measured at -31 % PostgreSQL CPU), now that they are decided per connection by the server's
answer. Also shown: database transactions per request (issue 13: the checkout check is
skipped for a connection used within the last second).

Each variant runs in its own process against the same seeded database, interleaved
(before, now, now-off, before, now, …): `TaskRepository.list_tasks` (20 tasks) and
`get_task` alternately, 4 at a time, through the variant's own pool and repository code.
Measured per request: PostgreSQL backend CPU (from /proc of the pool's backends), the
client's CPU, wall time, and transactions (pg_stat_database.xact_commit, read after the
pool closed so that every backend flushed its counters).

    uv run python -m loadtest.bench_db_path --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "tasks-api-bench"
USERS = 20
TASKS_PER_USER = 20
CONCURRENCY = 4
WARM = 400


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _backend_cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


async def _worker(url: str, requests: int, prepared: str) -> dict[str, Any]:
    """One measurement with the code importable from sys.path[0] (one tree or the other)."""
    from repositories import pool as pool_module
    from repositories.tasks import TaskRepository

    params = inspect.signature(pool_module.build_pool).parameters
    kwargs: dict[str, Any] = {
        "min_size": CONCURRENCY,
        "max_size": CONCURRENCY,
        "timeout": 5.0,
        "connect_timeout": 5,
    }
    if "prepared_statements" in params:
        kwargs["prepared_statements"] = prepared
    else:  # before issue 10: auto on a direct URL meant psycopg's threshold of 5
        kwargs["prepare_threshold"] = None if prepared == "off" else 5
    pool = pool_module.build_pool(url, **kwargs)
    pool.kwargs["application_name"] = APP_NAME
    await pool.open(wait=True, timeout=30)
    repo = TaskRepository(pool)
    users = [f"bench-{n}" for n in range(USERS)]
    with psycopg.connect(url, autocommit=True) as conn:
        ids = {
            u: [r[0] for r in conn.execute("SELECT id FROM tasks WHERE user_id = %s", (u,))]
            for u in users
        }

    async def one(n: int) -> None:
        user = users[n % USERS]
        if n % 2:
            await repo.get_task(user_id=user, task_id=ids[user][n % TASKS_PER_USER])
        else:
            tasks, _ = await repo.list_tasks(user_id=user)
            assert len(tasks) == TASKS_PER_USER

    async def run(count: int) -> None:
        queue = iter(range(count))

        async def lane() -> None:
            for n in queue:
                await one(n)

        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))

    await run(WARM)  # warm: every statement past the prepare threshold on every connection
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
            )
        ]
    assert len(pids) == CONCURRENCY, pids
    db_cpu0, cpu0, wall0 = _backend_cpu_seconds(pids), time.process_time(), time.perf_counter()
    await run(requests)
    wall = time.perf_counter() - wall0
    cpu, db_cpu = time.process_time() - cpu0, _backend_cpu_seconds(pids) - db_cpu0
    await pool.close()
    return {"wall": wall, "client_cpu": cpu, "db_cpu": db_cpu, "requests": requests}


def _xacts(url: str) -> int:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _measure(tree: Path, url: str, requests: int, prepared: str) -> dict[str, Any]:
    before = _xacts(url)
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_db_path", "--worker", str(tree), url,
         str(requests), prepared],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    time.sleep(0.5)
    # Over the warm-up and the run alike (the same mix); our own few queries around them
    # (ids, pids, counters, each connection's start) are negligible beside thousands.
    result["xacts"] = (_xacts(url) - before) / (WARM + requests)
    return result


def _seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(USERS):
            conn.execute("INSERT INTO users (id) VALUES (%s)", (f"bench-{n}",))
            conn.execute(
                "INSERT INTO tasks (user_id, title) "
                "SELECT %s, 'task ' || g FROM generate_series(1, %s) g",
                (f"bench-{n}", TASKS_PER_USER),
            )


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        tree, url, requests, prepared = sys.argv[2:6]
        sys.path.insert(0, tree)
        ours = ("repositories", "observability")
        for name in [m for m in sys.modules if m.split(".")[0] in ours]:
            del sys.modules[name]
        print(json.dumps(asyncio.run(_worker(url, int(requests), prepared))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a server; a database is made")
    parser.add_argument("--before", default="main", help="git ref of the 'before' code")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()

    name = f"bench_db_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = _with_db(args.database_url, name)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-before-") as tmp:
            archive = Path(tmp) / "before.tar"
            subprocess.run(
                ["git", "archive", "-o", str(archive), args.before],
                cwd=ROOT, check=True, timeout=60,
            )  # fmt: skip
            before_tree = Path(tmp) / "tree"
            with tarfile.open(archive) as tar:
                tar.extractall(before_tree, filter="data")
            from repositories.migrations import migrate

            asyncio.run(migrate(url, connect_timeout=5))
            _seed(url)
            variants = {
                f"before ({args.before})": (before_tree, "auto"),
                "now, auto": (ROOT, "auto"),
                "now, off (reference)": (ROOT, "off"),
            }
            results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for run in range(args.repeat):
                for variant, (tree, prepared) in variants.items():
                    r = _measure(tree, url, args.requests, prepared)
                    results[variant].append(r)
                    print(f"run {run + 1} {variant}: {json.dumps(r)}", file=sys.stderr)
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    print(
        "| variant | PostgreSQL CPU ms/request | client CPU ms/request | wall ms/request "
        "(c=4) | transactions/request |"
    )
    print("| --- | --- | --- | --- | --- |")
    for variant, runs in results.items():
        per = [r["requests"] for r in runs]
        print(
            f"| {variant} "
            f"| {_fmt([1000 * r['db_cpu'] / n for r, n in zip(runs, per, strict=True)])} "
            f"| {_fmt([1000 * r['client_cpu'] / n for r, n in zip(runs, per, strict=True)])} "
            f"| {_fmt([1000 * r['wall'] / n for r, n in zip(runs, per, strict=True)])} "
            f"| {_fmt([r['xacts'] for r in runs])} |"
        )


if __name__ == "__main__":
    main()
