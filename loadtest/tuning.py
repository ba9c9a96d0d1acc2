"""The tuning matrix: each server configuration run repeatedly, interleaved, medians with spread."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtest.locust_run import LoadShape, run_locust, shape_from_args
from loadtest.reports import report_dir, spread, summarize
from loadtest.seeding import seed_sql, warm_up
from loadtest.services import ServerConfig, fresh_database, running_server

TUNING: dict[str, ServerConfig] = {
    "baseline": ServerConfig(),
    "pool-4": ServerConfig(env={"DB_POOL_MIN": "2", "DB_POOL_MAX": "4"}),
    "pool-20": ServerConfig(env={"DB_POOL_MIN": "2", "DB_POOL_MAX": "20"}),
    "pool-min-10": ServerConfig(env={"DB_POOL_MIN": "10", "DB_POOL_MAX": "10"}),
    "prepared-off": ServerConfig(env={"DB_PREPARED_STATEMENTS": "off"}),
    "log-warning": ServerConfig(env={"LOG_LEVEL": "WARNING"}),  # no access line per request
    "workers-2": ServerConfig(workers=2),
    "uvicorn-uvloop-httptools": ServerConfig(server="uvicorn"),
    "uvicorn-asyncio-h11": ServerConfig(server="uvicorn", loop="asyncio", http="h11"),
}


def _one_config(
    name: str,
    config: ServerConfig,
    server_url: str,
    shape: LoadShape,
    warm_up_seconds: float,
    run_dir: Path,
    secret: str,
    prefix: str,
) -> dict[str, Any]:
    """One run of one configuration on a fresh database (so every run starts from the same
    data, and a schema edited by someone else between runs cannot break the next start)."""
    with (
        fresh_database(server_url) as database_url,
        running_server(config, database_url, secret, run_dir / "server.log") as (host, pid),
    ):
        seed_sql(database_url, prefix, shape.identities, shape.per_user)
        warm_up(host, secret, prefix, warm_up_seconds)
        rows, total, cpu = run_locust(host, secret, prefix, shape, run_dir, pid, database_url)
    return summarize(rows, total, shape, name, run_dir, cpu)


def _progress(rep: int, repeat: int, name: str, summary: dict[str, Any]) -> str:
    total = summary["total"]
    worst = max((r["p99"] for r in summary["rows"]), default=0.0)
    return (
        f"[{rep + 1}/{repeat}] {name:<26} p50 {total['p50']:>4.0f} "
        f"p95 {total['p95']:>4.0f} p99 {total['p99']:>4.0f} worst-p99 {worst:>4.0f} "
        f"req/s {total['rps']:>6.1f} errors {total['failures']} "
        f"cpu/req app {summary.get('app_cpu_ms_per_request', 0):.2f} "
        f"db {summary.get('db_cpu_ms_per_request', 0):.2f} ms "
        f"load {summary['loadavg_end'][0]:.1f} "
        f"psi {summary.get('cpu_pressure_pct', float('nan')):.0f}%"
    )


def tune_table(shape: LoadShape, repeat: int, results: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown row per configuration: median [min..max] of its runs."""
    lines = [
        f"{shape.users} users, think time {shape.wait_min}..{shape.wait_max} s, "
        f"{shape.run_time} s per run, {repeat} runs each; median [min..max]",
        "",
        "| config | p50 ms | p95 ms | p99 ms | worst endpoint p99 ms | req/s | errors "
        "| service CPU ms/req | PostgreSQL CPU ms/req | CPU pressure % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        if not runs:
            lines.append(f"| {name} | no successful run |")
            continue
        totals = [r["total"] for r in runs]
        worst_p99 = [max(row["p99"] for row in r["rows"]) for r in runs]
        lines.append(
            f"| {name} | {spread([t['p50'] for t in totals])} | "
            f"{spread([t['p95'] for t in totals])} | {spread([t['p99'] for t in totals])} | "
            f"{spread(worst_p99)} | {spread([t['rps'] for t in totals], '{:.1f}')} | "
            f"{sum(t['failures'] for t in totals)} | "
            f"{spread([r.get('app_cpu_ms_per_request', 0.0) for r in runs], '{:.2f}')} | "
            f"{spread([r.get('db_cpu_ms_per_request', 0.0) for r in runs], '{:.2f}')} | "
            f"{spread([r.get('cpu_pressure_pct', 0.0) for r in runs])} |"
        )
    return "\n".join(lines)


def cmd_tune(args: argparse.Namespace) -> int:
    """Each configuration `--repeat` times, interleaved (so machine noise hits all alike)."""
    shape = shape_from_args(args)
    names = args.configs.split(",") if args.configs else list(TUNING)
    unknown = [n for n in names if n not in TUNING]
    if unknown or not args.database_url:
        print(f"tune: needs --database-url; unknown configs: {unknown}", file=sys.stderr)
        return 2
    out = report_dir("tune")
    out.mkdir(parents=True)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    secret = secrets.token_urlsafe(32)
    prefix = f"lt{uuid.uuid4().hex[:8]}"
    for rep in range(args.repeat):
        for name in names:
            run_dir = out / f"{name}-{rep}"
            run_dir.mkdir()
            config = replace(TUNING[name], nice=shape.nice) if shape.nice else TUNING[name]
            try:
                summary = _one_config(
                    name, config, args.database_url, shape, args.warm_up, run_dir, secret, prefix
                )
            except RuntimeError as exc:  # one broken run must not lose the others
                print(f"[{rep + 1}/{args.repeat}] {name}: run failed: {exc}", flush=True)
                continue
            results[name].append(summary)
            print(_progress(rep, args.repeat, name, summary), flush=True)
    table = tune_table(shape, args.repeat, results)
    (out / "tune.md").write_text(table + "\n", encoding="utf-8")
    (out / "tune.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(table)
    print(f"runs: {out}")
    return 0
