"""Runs the Locust scenario headless for a bounded time and judges it against a profile.

  uv run python -m loadtest.run run --profile strict --serve \
      --database-url postgresql://postgres@127.0.0.1:5432/test --fresh-database
  uv run python -m loadtest.run run --profile spec --host http://127.0.0.1:8000   # running service
  uv run python -m loadtest.run tune --database-url postgresql://postgres@127.0.0.1:5432/test
  uv run python -m loadtest.run scale --server-url postgresql://postgres@127.0.0.1:5432/test

Everything it starts (the service, Locust, a fresh database) it stops or drops again.
Reports go under loadtest/reports/ (git-ignored). Exit status: 0 when the profile's thresholds
hold, 1 when one is missed, 2 for a usage or set-up error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python loadtest/run.py`
    sys.path.insert(0, str(ROOT))

from loadtest.judging import PROFILES, parse_stats  # noqa: E402
from loadtest.locust_run import run_locust, shape_from_args  # noqa: E402
from loadtest.reports import print_table, repeated_table, report_dir, summarize  # noqa: E402
from loadtest.seeding import seed_api, seed_sql, warm_up  # noqa: E402
from loadtest.services import ServerConfig, fresh_database, running_server  # noqa: E402
from loadtest.tuning import TUNING, cmd_tune  # noqa: E402


def _one_run(args: argparse.Namespace, out: Path) -> dict[str, Any] | int:
    """One bounded run: its summary, or an exit status for a usage error."""
    shape = shape_from_args(args)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"lt{uuid.uuid4().hex[:8]}"
    config = ServerConfig(
        server=args.server,
        workers=args.workers,
        loop=args.loop,
        http=args.http,
        env=_env(args),
        nice=args.nice,
    )
    with contextlib.ExitStack() as stack:
        if args.serve:
            if not args.database_url:
                print("run: --serve needs --database-url", file=sys.stderr)
                return 2
            database_url = args.database_url
            if args.fresh_database:
                database_url = stack.enter_context(fresh_database(args.database_url))
            secret = os.environ.get("BETTER_AUTH_SECRET") or secrets.token_urlsafe(32)
            host, server_pid = stack.enter_context(
                running_server(config, database_url, secret, out / "server.log")
            )
        else:
            secret = os.environ.get("BETTER_AUTH_SECRET", "")
            if not args.host or not secret:
                print("run: give --serve, or --host with BETTER_AUTH_SECRET set", file=sys.stderr)
                return 2
            host = args.host.rstrip("/")
            database_url = args.database_url
            server_pid = None
        started = time.monotonic()
        if database_url:
            seed_sql(database_url, prefix, shape.identities, shape.per_user)
        else:
            seed_api(host, secret, prefix, shape.identities, shape.per_user)
        seeded = time.monotonic() - started
        warmed = warm_up(host, secret, prefix, args.warm_up)
        print(
            f"seeded {shape.identities} users x {shape.per_user} tasks in {seeded:.1f} s; "
            f"warm-up: {warmed} requests in {args.warm_up:.0f} s; running {shape.users} users for "
            f"{shape.run_time} s against {host}",
            flush=True,
        )
        rows, total, cpu = run_locust(host, secret, prefix, shape, out, server_pid, database_url)
    summary = summarize(rows, total, shape, args.profile, out, cpu)
    print_table(rows, total, summary["verdicts"], judged=args.profile)
    _, whole = parse_stats(out / "locust_stats.csv")
    summary["locust_whole"] = asdict(whole)
    print(
        f"Locust's own count from the end of the ramp-up (settle period included): "
        f"{whole.requests} requests, p95 {whole.p95:.0f} ms, p99 {whole.p99:.0f} ms, "
        f"max {whole.max:.0f} ms"
    )
    if "app_cpu_ms_per_request" in summary:
        print(
            f"CPU per request: service {summary['app_cpu_ms_per_request']:.2f} ms, "
            f"PostgreSQL {summary.get('db_cpu_ms_per_request', 0.0):.2f} ms; "
            f"load average at the end {summary['loadavg_end'][0]:.1f}; CPU pressure (PSI some) "
            f"{summary.get('cpu_pressure_pct', float('nan')):.0f}% of the run"
        )
    print(f"report: {out}/report.html  stats: {out}/locust_stats.csv", flush=True)
    return summary


def cmd_run(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    out = Path(args.report_dir) if args.report_dir else report_dir(args.profile)
    summaries: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        result = _one_run(args, out if args.repeat == 1 else out / f"run-{rep + 1}")
        if isinstance(result, int):
            return result
        summaries.append(result)
    if args.repeat > 1:
        table = repeated_table(summaries)
        (out / "summary.md").write_text(table + "\n", encoding="utf-8")
        print(table)
    missed = [s for s in summaries if s["verdicts"][profile.name]]
    return 1 if missed else 0


def _env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in args.env or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _load_options(
    p: argparse.ArgumentParser, *, users: int, run_time: str, spawn_rate: float, settle: float
) -> None:
    p.add_argument("--users", type=int, default=users, help="concurrent simulated users")
    p.add_argument("--spawn-rate", type=float, default=spawn_rate, help="users started per second")
    p.add_argument("--run-time", default=run_time, help="e.g. 30s, 2m (bounded; Locust stops)")
    p.add_argument(
        "--wait",
        type=float,
        nargs=2,
        default=(0.5, 1.5),
        metavar=("MIN", "MAX"),
        help="think time between a user's requests, seconds",
    )
    p.add_argument("--identities", type=int, default=0, help="distinct user ids (default: users)")
    p.add_argument("--tasks-per-user", type=int, default=50, help="tasks seeded per user id")
    p.add_argument(
        "--settle",
        type=float,
        default=settle,
        help="seconds after the last user spawned before the measured window opens",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the service and Locust, e.g. -10 on a busy shared machine (root)",
    )
    p.add_argument(
        "--warm-up", type=float, default=5.0, help="seconds of warm-up traffic before measuring"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="one bounded Locust run, judged against a profile")
    run.add_argument("--profile", choices=sorted(PROFILES), default="spec")
    run.add_argument("--host", help="target a running service (needs BETTER_AUTH_SECRET)")
    run.add_argument("--serve", action="store_true", help="start `tasks-api serve` and stop it")
    run.add_argument("--database-url", help="PostgreSQL for --serve; also seeds through SQL")
    run.add_argument(
        "--fresh-database", action="store_true", help="CREATE a new database there, DROP it after"
    )
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--server", choices=("cli", "uvicorn"), default="cli")
    run.add_argument("--loop", default="uvloop", help="with --server uvicorn")
    run.add_argument("--http", default="httptools", help="with --server uvicorn")
    run.add_argument("--env", action="append", help="KEY=VALUE for the service")
    run.add_argument("--report-dir", help="default: loadtest/reports/<time>-<profile>-<id>")
    run.add_argument(
        "--repeat", type=int, default=1, help="runs (each its own service and database)"
    )
    # 10 users/s: people arrive over seconds, not all in one instant (100 users in the same
    # 10 ms are 100 requests in flight at once, about 250 ms of queue for one event loop).
    _load_options(run, users=100, run_time="40s", spawn_rate=10.0, settle=0.0)
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="the tuning matrix, medians of repeated short runs")
    tune.add_argument("--database-url", help="server URL; a fresh database is made and dropped")
    tune.add_argument("--configs", help=f"comma-separated subset of: {','.join(TUNING)}")
    tune.add_argument("--repeat", type=int, default=3)
    _load_options(tune, users=100, run_time="20s", spawn_rate=50.0, settle=2.0)
    tune.set_defaults(func=cmd_tune)

    # Handed whole to loadtest/scale.py by main() (see `run.py scale --help`).
    sub.add_parser("scale", help="1M tasks / 10k users: plans and list latency", add_help=False)
    return parser


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the service, Locust and the fresh
    # database are still stopped and dropped on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:
        from loadtest.scale import main as scale_main

        return scale_main(argv[1:])
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
