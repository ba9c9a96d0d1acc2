"""Micro-benchmark: microseconds per access line through the service's logging set-up.

  uv run python -m loadtest.bench_access_log                       # this checkout alone
  # against another checkout's logging, old and new interleaved in fresh processes:
  git worktree add /tmp/log-base 8d66108
  uv run python -m loadtest.bench_access_log --baseline /tmp/log-base --rounds 7

Each measurement is a fresh process (`--child`), pinned to one core (`--cpu`, default 0), with
the production set-up: `configure_logging(level="INFO", fmt="json")` with stdout on
/dev/null, a request id bound in the context, then `RequestContextMiddleware._access_line`
(the middleware's own call, the route template and user id as for
`GET /api/{user_id}/tasks/{task_id}`): the best of 5 repeats of 20,000 lines, in µs per
line. With `--baseline`, the checkouts alternate round by round (so a busy neighbour weighs
on both alike) and the median (min..max) of the rounds is printed for each, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINES = 20_000


def one_run(cpu: int | None) -> float:
    """µs per access line in this process (best of 5 repeats of LINES lines)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the handler writes here until exit
    import structlog

    from observability.logging import configure_logging
    from observability.middleware import RequestContextMiddleware

    configure_logging(level="INFO", fmt="json")
    structlog.contextvars.bind_contextvars(request_id="0123456789abcdef0123456789abcdef")

    class Route:
        path = "/api/{user_id}/tasks/{task_id}"

    scope = {"method": "GET", "route": Route(), "state": {"user_id": "user-17"}}
    access_line = RequestContextMiddleware._access_line

    def one() -> None:
        access_line(scope, 200, 0.00123)

    best = min(timeit.repeat(one, number=LINES, repeat=5))
    return best / LINES * 1e6


def child(checkout: Path, cpu: int | None) -> float:
    """One fresh process measuring `checkout`'s observability package."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    args = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if cpu is not None:
        args += ["--cpu", str(cpu)]
    done = subprocess.run(
        args, cwd=checkout, env=env, capture_output=True, text=True, check=True, timeout=300
    )
    return float(done.stderr.strip().split()[0])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to (-1: none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    if args.child:
        sys.stderr.write(f"{one_run(cpu):.2f} us per access line\n")
        return
    systems = {"service": ROOT}
    if args.baseline is not None:
        systems["baseline"] = args.baseline.resolve()
    results: dict[str, list[float]] = {name: [] for name in systems}
    for round_no in range(args.rounds):
        order = list(systems.items())
        if round_no % 2:
            order.reverse()
        for name, checkout in order:
            results[name].append(child(checkout, cpu))
        print(
            f"round {round_no + 1}: "
            + ", ".join(f"{name} {results[name][-1]:.1f}" for name in systems),
            flush=True,
        )
    for name, values in results.items():
        print(f"{name}: {summary(values)} µs per access line ({systems[name]})")
    if "baseline" in results:
        ratios = [s / b for s, b in zip(results["service"], results["baseline"], strict=True)]
        print(f"service / baseline, per round: {summary(ratios)}")


if __name__ == "__main__":
    main()
