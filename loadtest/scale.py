"""Scale check: 1,000,000 tasks across 10,000 users, seeded in SQL, against a small table.

  uv run python -m loadtest.scale --server-url postgresql://postgres@127.0.0.1:5432/test

Writes every plan in full and the numbers to loadtest/reports/scale-<time>/scale-plans.md
(git-ignored; `--markdown PATH` to write elsewhere); loadtest/README.md keeps the summary.

Two fresh databases on the server (dropped afterwards), both migrated exactly as the service
migrates: `small` (2,000 tasks, 11 users) and `large` (1,000,000 tasks, 10,000 users). In both,
one user owns exactly 1,000 tasks, spread through the table as a real user's rows would be.
Then, for that user:
  * `EXPLAIN (ANALYZE, BUFFERS)` of every statement in sql/tasks.sql, every list variant of
    repositories.queries.LIST_STATEMENTS included, with the values inlined (the custom plan),
    and again as a generic plan (PREPARE + plan_cache_mode=force_generic_plan), which is what
    a prepared statement may switch to after five runs; neither may contain a Seq Scan on tasks;
  * list latency through the service's own TaskRepository and pool, every variant, small vs
    large, reported as medians and the large/small ratio.
Exit status 1 when a plan scans tasks sequentially or the list latency ratio is not flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from loadtest.common import REPORTS, mint_token  # noqa: E402
from loadtest.services import ServerConfig, fresh_database, running_server  # noqa: E402
from repositories.database import prepare_database  # noqa: E402
from repositories.pool import build_pool  # noqa: E402
from repositories.queries import LIST_STATEMENTS, Q  # noqa: E402
from repositories.service import SERVICE_Q  # noqa: E402
from repositories.tasks import TaskRepository  # noqa: E402

BIG_USER = "scale-00000"

SEED_USERS = """
INSERT INTO users (id, name)
SELECT 'scale-' || lpad(g::text, 5, '0'), 'User ' || g FROM generate_series(0, %(users)s - 1) AS g
"""
# Every `stride`-th row belongs to BIG_USER, so its 1,000 tasks are spread over the whole heap;
# the others go round-robin to the remaining users. Titles, completion and times vary.
SEED_TASKS = """
INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT CASE WHEN g %% %(stride)s = 0 THEN %(big)s
            ELSE 'scale-' || lpad((1 + g %% (%(users)s - 1))::text, 5, '0') END,
       initcap(substr(md5(g::text), 1, 6)) || ' task ' || g,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE repeat('d', 20 + g %% 80) END,
       substr(md5(g::text), 1, 1) < '5',
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => g * 30),
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => g * 30 + g %% 7000)
FROM generate_series(0, %(tasks)s - 1) AS g
"""
_PARAM = re.compile(r"%\((\w+)\)s")
_INDEX = re.compile(
    r"(?:Index Only Scan|Index Scan(?: Backward)?) using (\w+) on tasks|Bitmap Index Scan on (\w+)"
)


def seed(url: str, *, users: int, tasks: int, big_tasks: int) -> float:
    """Rows in SQL (generate_series), indexes rebuilt after the load, then VACUUM ANALYZE."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename = 'tasks' AND indexname <> 'tasks_pkey'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(SEED_USERS, {"users": users})
        params = {"users": users, "tasks": tasks, "stride": tasks // big_tasks, "big": BIG_USER}
        conn.execute(SEED_TASKS, params)
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE users")
        conn.execute("VACUUM ANALYZE tasks")
        n = conn.execute(
            "SELECT count(*) FILTER (WHERE user_id = %s), count(*) FROM tasks", [BIG_USER]
        ).fetchone()
        assert n is not None and n[0] == big_tasks, f"{BIG_USER} has {n} tasks"
    return time.monotonic() - started


@dataclass
class Plan:
    name: str
    custom: str
    generic: str
    execution_ms: float
    seq_scan_on_tasks: bool
    indexes: list[str] = field(default_factory=list)


def statements(task_id: int) -> dict[str, tuple[str, dict[str, Any], bool]]:
    """Every statement with the values it is explained with, and whether it writes."""
    user = {"user_id": BIG_USER}
    one = {**user, "task_id": task_id, "if_match": None}
    out: dict[str, tuple[str, dict[str, Any], bool]] = {
        "create_task": (
            Q["create_task"],
            {**user, "title": "Explained", "description": None, "name": None, "email": None},
            True,
        ),
        "create_task_idempotent": (
            Q["create_task_idempotent"],
            {
                **user,
                "title": "Explained",
                "description": None,
                "name": None,
                "email": None,
                "key": "explained",
                "fingerprint": b"explained",
            },
            True,
        ),
        "get_task": (Q["get_task"], one, False),
    }
    for (status, sort, order, paged), text in LIST_STATEMENTS.items():
        name = f"list_tasks{'_page' if paged else ''} status={status} sort={sort} order={order}"
        listed = {**user, "known": []}
        params = {**listed, "limit": 50, "offset": 100} if paged else listed
        out[name] = (text, params, False)
    update = {"set_title": True, "title": "Renamed", "set_description": False, "description": None}
    out["update_task"] = (Q["update_task"], {**one, **update}, True)
    out["toggle_task"] = (Q["toggle_task"], one, True)
    out["set_task_completed"] = (Q["set_task_completed"], {**one, "completed": True}, True)
    out["delete_task"] = (Q["delete_task"], one, True)
    out["schema_version"] = (SERVICE_Q["schema_version"], {}, False)
    return out


def explain_all(url: str) -> list[Plan]:
    """Writes are explained inside a transaction that is rolled back: the data stays put."""
    plans: list[Plan] = []
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        row = conn.execute(
            "SELECT id FROM tasks WHERE user_id = %s ORDER BY id OFFSET 500 LIMIT 1", [BIG_USER]
        ).fetchone()
        assert row is not None
        conn.rollback()
        for name, (text, params, _writes) in statements(int(row[0])).items():
            explain = "EXPLAIN (ANALYZE, BUFFERS) " + text
            custom_lines = [r[0] for r in conn.execute(explain, params)]
            conn.rollback()
            generic_lines = _generic(conn, text, params)
            conn.rollback()
            custom = "\n".join(custom_lines)
            generic = "\n".join(generic_lines)
            match = re.search(r"Execution Time: ([0-9.]+) ms", custom)
            indexes = sorted({a or b for a, b in _INDEX.findall(custom)})
            plans.append(
                Plan(
                    name=name,
                    custom=custom,
                    generic=generic,
                    execution_ms=float(match[1]) if match else float("nan"),
                    seq_scan_on_tasks="Seq Scan on tasks" in custom + generic,
                    indexes=indexes,
                )
            )
    return plans


def _generic(conn: psycopg.Connection[Any], text: str, params: dict[str, Any]) -> list[str]:
    """The plan a prepared statement gets once PostgreSQL switches to its generic plan."""
    names: list[str] = []
    for found in _PARAM.findall(text):
        if found not in names:
            names.append(found)
    body = _PARAM.sub(lambda m: f"${names.index(m[1]) + 1}", text)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(sql.SQL("PREPARE scale_stmt AS {}").format(sql.SQL(body)))
    args = ", ".join(["%s"] * len(names))
    execute = f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE scale_stmt({args})" if names else (
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE scale_stmt"
    )  # fmt: skip
    lines = [r[0] for r in conn.execute(execute, [params[n] for n in names])]
    conn.rollback()  # undoes the SET; a PREPARE outlives the transaction, hence DEALLOCATE
    with contextlib.suppress(psycopg.Error):
        conn.execute("DEALLOCATE scale_stmt")
    conn.rollback()
    return lines


async def list_latency(url: str, iterations: int) -> dict[str, list[float]]:
    """Milliseconds per call of TaskRepository.list_tasks for BIG_USER, every variant."""
    pool = build_pool(url, min_size=1, max_size=1, timeout=10.0, connect_timeout=5)
    await pool.open(wait=True, timeout=10.0)
    repo = TaskRepository(pool)
    variants = list(LIST_STATEMENTS)
    samples: dict[str, list[float]] = {_variant(v): [] for v in variants}
    try:
        for rep in range(iterations + 6):  # the first six warm the cache and prepare
            for status, sort, order, paged in variants:
                started = time.perf_counter()
                await repo.list_tasks(
                    user_id=BIG_USER,
                    status=status,  # type: ignore[arg-type]
                    sort=sort,  # type: ignore[arg-type]
                    order=order,  # type: ignore[arg-type]
                    limit=50 if paged else None,
                    offset=100 if paged else 0,
                )
                if rep >= 6:
                    key = _variant((status, sort, order, paged))
                    samples[key].append(1000 * (time.perf_counter() - started))
    finally:
        await pool.close()
    return samples


HTTP_VARIANTS = ("", "?status=pending&sort=title", "?sort=created&order=desc&limit=50&offset=100")


def http_latency(url: str, iterations: int, log: Path) -> dict[str, list[float]]:
    """Milliseconds per GET of BIG_USER's list through `tasks-api serve` (1 worker), end to end."""
    secret = "scale-check-secret-" + "x" * 24
    headers = {"Authorization": f"Bearer {mint_token(BIG_USER, secret, 600)}"}
    samples: dict[str, list[float]] = {v or "(default)": [] for v in HTTP_VARIANTS}
    with (
        running_server(ServerConfig(), url, secret, log) as (base, _pid),
        httpx.Client(base_url=base, headers=headers, timeout=10.0) as client,
    ):
        for rep in range(iterations + 6):
            for variant in HTTP_VARIANTS:
                started = time.perf_counter()
                resp = client.get(f"/api/{BIG_USER}/tasks{variant}")
                elapsed = 1000 * (time.perf_counter() - started)
                resp.raise_for_status()
                if rep >= 6:
                    samples[variant or "(default)"].append(elapsed)
    return samples


def index_defs(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks' ORDER BY indexname"
            )
        ]


def _variant(key: tuple[str, str, str, bool]) -> str:
    status, sort, order, paged = key
    return f"status={status} sort={sort} order={order}{' limit=50 offset=100' if paged else ''}"


def _build(server_url: str, stack: contextlib.ExitStack, **sizes: int) -> tuple[str, float]:
    url = stack.enter_context(fresh_database(server_url, prefix="scale"))
    asyncio.run(prepare_database(url, startup_timeout=30.0, connect_timeout=5))
    return url, seed(url, **sizes)


def markdown(
    plans: list[Plan],
    small: dict[str, list[float]],
    large: dict[str, list[float]],
    seconds: dict[str, float],
    args: argparse.Namespace,
    http_small: dict[str, list[float]],
    http_large: dict[str, list[float]],
    indexes: list[str],
) -> str:
    med = statistics.median
    out = [
        "# Scale check: plans and list latency",
        "",
        "Generated by `uv run python -m loadtest.scale` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"large: {args.tasks:,} tasks across {args.users:,} users "
        f"(seeded in {seconds['large']:.0f} s); small: {args.small_tasks:,} tasks across "
        f"{args.small_users} users. `{BIG_USER}` owns {args.big_tasks:,} tasks in both.",
        "",
        "Indexes on tasks (from the migrations in the working tree at the time):",
        "",
        *[f"- `{d}`" for d in indexes],
        "",
        "## GET /api/{user_id}/tasks for the 1,000-task user, end to end (ms)",
        "",
        f"Median [p10..p90] of {args.iterations} requests per variant to `tasks-api serve` "
        "(1 worker) over loopback: auth, SQL, rows to models, JSON.",
        "",
        "| query | small | large | large / small |",
        "| --- | --- | --- | --- |",
        *[
            f"| {k} | {_q(http_small[k])} | {_q(http_large[k])} | "
            f"{med(http_large[k]) / med(http_small[k]):.2f} |"
            for k in http_small
        ],
        "",
        "## List latency for the 1,000-task user (TaskRepository.list_tasks, ms)",
        "",
        f"Median [p10..p90] of {args.iterations} calls per variant, interleaved, through the "
        "service's pool and repository (statement, transfer of every row, model construction).",
        "",
        "| variant | rows | small | large | large / small |",
        "| --- | --- | --- | --- | --- |",
    ]
    ratios = []
    for key in small:
        s, lg = small[key], large[key]
        ratio = med(lg) / med(s)
        ratios.append(ratio)
        rows = "50" if "limit" in key else "all"
        out.append(f"| {key} | {rows} | {_q(s)} | {_q(lg)} | {ratio:.2f} |")
    out += [
        "",
        f"Median ratio over all variants: **{med(ratios):.2f}** "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}).",
        "",
        "## Plans on the large table",
        "",
        "| statement | index used (custom plan) | Seq Scan on tasks | execution ms |",
        "| --- | --- | --- | --- |",
    ]
    for p in plans:
        idx = ", ".join(p.indexes) or "-"
        seq = "**yes**" if p.seq_scan_on_tasks else "no"
        out.append(f"| {p.name} | {idx} | {seq} | {p.execution_ms:.3f} |")
    out += ["", "## Every plan in full (custom, then generic)", ""]
    for p in plans:
        out += [f"### {p.name}", "", "```", p.custom, "```", "", "generic plan:", "", "```"]
        out += [p.generic, "```", ""]
    return "\n".join(out)


def _q(values: list[float]) -> str:
    qs = statistics.quantiles(values, n=10)
    return f"{statistics.median(values):.2f} [{qs[0]:.2f}..{qs[-1]:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest.scale", description=__doc__)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--big-tasks", type=int, default=1_000)
    parser.add_argument("--small-users", type=int, default=11)
    parser.add_argument("--small-tasks", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--max-ratio", type=float, default=1.5, help="'flat' means below this")
    parser.add_argument(
        "--markdown", help="write the plans and numbers here (default: in the run's reports dir)"
    )
    args = parser.parse_args(argv)

    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        small_url, seconds["small"] = _build(
            args.server_url,
            stack,
            users=args.small_users,
            tasks=args.small_tasks,
            big_tasks=args.big_tasks,
        )
        print(f"small: {args.small_tasks} tasks seeded in {seconds['small']:.1f} s", flush=True)
        large_url, seconds["large"] = _build(
            args.server_url, stack, users=args.users, tasks=args.tasks, big_tasks=args.big_tasks
        )
        print(f"large: {args.tasks} tasks seeded in {seconds['large']:.1f} s", flush=True)
        plans = explain_all(large_url)
        indexes = index_defs(large_url)
        logs = REPORTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
        logs.mkdir(parents=True, exist_ok=True)
        http_small = http_latency(small_url, args.iterations, logs / "server-small.log")
        http_large = http_latency(large_url, args.iterations, logs / "server-large.log")
        # Alternate the two databases so that machine noise falls on both alike.
        small: dict[str, list[float]] = {}
        large: dict[str, list[float]] = {}
        for _ in range(2):
            for target, url in ((small, small_url), (large, large_url)):
                for key, values in asyncio.run(list_latency(url, args.iterations // 2)).items():
                    target.setdefault(key, []).extend(values)
    text = markdown(plans, small, large, seconds, args, http_small, http_large, indexes)
    target = Path(args.markdown) if args.markdown else logs / "scale-plans.md"
    target.write_text(text + "\n", encoding="utf-8")
    print(f"plans: {target}")
    summary_end = text.index("## Every plan in full")
    print(text[:summary_end])
    bad = [p.name for p in plans if p.seq_scan_on_tasks]
    ratio = statistics.median(
        statistics.median(large[k]) / statistics.median(small[k]) for k in small
    )
    if bad:
        print(f"FAIL: Seq Scan on tasks in: {', '.join(bad)}")
    if ratio >= args.max_ratio:
        print(f"FAIL: list latency ratio large/small {ratio:.2f} >= {args.max_ratio}")
    return 1 if bad or ratio >= args.max_ratio else 0


if __name__ == "__main__":
    raise SystemExit(main())
