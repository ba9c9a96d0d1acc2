"""What a run leaves behind: the printed table, summary.json, and the tables of repeated runs."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadtest.common import REPORTS
from loadtest.judging import ENDPOINTS, PROFILES, Row, judge
from loadtest.locust_run import LoadShape


def print_table(
    rows: list[Row], total: Row, verdicts: dict[str, list[str]], *, judged: str
) -> None:
    """The per-endpoint table and each profile's verdict. Only `judged` (the run's --profile)
    decides the exit status; the others are printed for reference, never as a FAIL."""
    names = list(verdicts)
    head = f"{'endpoint':<8} {'method':<6} {'template':<40} {'reqs':>7} {'errors':>6} "
    head += f"{'p50':>5} {'p95':>5} {'p99':>5} {'max':>6} {'req/s':>7}  " + " ".join(
        f"{n:>6}" for n in names
    )
    print(head)
    for row in [*rows, total]:
        marks = []
        for n in names:
            bad = any(m.startswith(f"{row.endpoint}:") for m in verdicts[n])
            marks.append(f"{'-' if row is total else ('MISS' if bad else 'ok'):>6}")
        print(
            f"{row.endpoint if row is not total else 'all':<8} {row.method:<6} {row.name:<40} "
            f"{row.requests:>7} {row.failures:>6} {row.p50:>5.0f} {row.p95:>5.0f} {row.p99:>5.0f} "
            f"{row.max:>6.0f} {row.rps:>7.1f}  " + " ".join(marks)
        )
    print("(ms; exact percentiles of the requests in the measured window: see --settle)")
    for n, missed in verdicts.items():
        if n == judged:
            print(f"profile {n} (judged): {'PASS' if not missed else 'FAIL'}")
        else:
            outcome = "met" if not missed else f"{len(missed)} threshold(s) not met"
            print(f"profile {n} (reference only, not judged): {outcome}")
        for line in missed:
            print(f"  - {line}")


def summarize(
    rows: list[Row],
    total: Row,
    shape: LoadShape,
    label: str,
    out: Path,
    cpu: dict[str, float] | None = None,
) -> dict[str, Any]:
    verdicts = {name: judge(p, rows, total, shape.users) for name, p in PROFILES.items()}
    per_request = {
        f"{k}_cpu_ms_per_request": 1000 * v / total.requests if total.requests else 0.0
        for k, v in (cpu or {}).items()
        if k in ("app", "db")
    }
    if cpu and "pressure" in cpu:
        per_request["cpu_pressure_pct"] = 100 * cpu["pressure"]
    summary = {
        "loadavg_end": os.getloadavg(),
        **per_request,
        "label": label,
        "shape": asdict(shape),
        "rows": [asdict(r) | {"endpoint": r.endpoint} for r in rows],
        "total": asdict(total),
        "verdicts": verdicts,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def report_dir(label: str) -> Path:
    return REPORTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{uuid.uuid4().hex[:4]}"


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{fmt.format(med)} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def repeated_table(summaries: list[dict[str, Any]]) -> str:
    """Per endpoint: median [min..max] over the runs, and how many runs each profile passed."""
    n = len(summaries)
    lines = [
        f"Medians [min..max] of {n} runs; ms.",
        "",
        "| endpoint | method and template | p50 | p95 | p99 | max | req/s | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys: list[tuple[str, str, str]] = []
    for s in summaries:
        keys += [
            k for k in ((r["method"], r["name"], r["endpoint"]) for r in s["rows"]) if k not in keys
        ]
    order = list(ENDPOINTS)
    keys.sort(key=lambda k: order.index(k[:2]) if k[:2] in order else 99)
    for method, name, endpoint in [*keys, ("", "Aggregated", "all")]:
        found = []
        for s in summaries:
            rows = s["rows"] + [s["total"] | {"endpoint": "all"}]
            found += [r for r in rows if r["method"] == method and r["name"] == name]
        cells = [spread([r[k] for r in found]) for k in ("p50", "p95", "p99", "max")]
        lines.append(
            f"| {endpoint} | {f'`{method} {name}`' if method else 'all requests'} | "
            f"{' | '.join(cells)} | "
            f"{spread([r['rps'] for r in found], '{:.1f}')} | "
            f"{sum(r['failures'] for r in found)} |"
        )
    lines.append("")
    for profile in PROFILES:
        passed = sum(1 for s in summaries if not s["verdicts"][profile])
        lines.append(f"- profile `{profile}`: passed {passed} of {n} runs")
    cpu = [s.get("app_cpu_ms_per_request", 0.0) for s in summaries]
    db = [s.get("db_cpu_ms_per_request", 0.0) for s in summaries]
    psi = [s.get("cpu_pressure_pct", 0.0) for s in summaries]
    lines.append(
        f"- CPU per request: service {spread(cpu, '{:.2f}')} ms, PostgreSQL "
        f"{spread(db, '{:.2f}')} ms; CPU pressure during the runs {spread(psi)} %"
    )
    return "\n".join(lines)
