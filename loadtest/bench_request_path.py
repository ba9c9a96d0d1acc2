"""The app's own CPU per request, without an HTTP server: the service against the ceiling.

`python -m loadtest.capacity` measures whole processes under wrk, server and event loop
included, on a shared machine where one run moves by 10-30 %. This isolates the part that
differs between the two apps, the ASGI app itself: each system runs in a process of its own
(pinned to core 0 when `taskset` exists) on its own seeded database, its lifespan started,
and ASGI requests are handed straight to it, `--concurrency` at a time, under uvloop. CPU is
the process's `time.process_time()` (user + system, seconds) over `--requests` requests per
endpoint; rounds interleave the systems (service, ceiling, service, …) and the medians with
min..max are printed, with the ratio per endpoint. Every answer must be 2xx (else exit 1).
The service logs its access lines to /dev/null (the cost of writing them counts).

    uv run python -m loadtest.bench_request_path --server-url postgresql://postgres@127.0.0.1:5432/test
    # a change side by side with the revision before it:
    git worktree add /tmp/base HEAD~1
    uv run python -m loadtest.bench_request_path --systems service baseline ceiling \
        --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("list", "get", "create", "toggle")
SECRET = "bench-request-path-secret-0123456789abcdef"
BODY = b'{"title":"capacity","description":"created under load"}'


def _requests(endpoint: str, tasks: dict[str, list[int]], tokens: dict[str, str]) -> list[Any]:
    """(method, path, headers, body) for one endpoint, rotating over users as capacity.lua."""
    users = sorted(tasks)
    out: list[Any] = []
    for n in range(len(users) * 4):
        user = users[n % len(users)]
        auth = (b"authorization", b"Bearer " + tokens[user].encode())
        task = tasks[user][(n // len(users)) % len(tasks[user])]
        if endpoint == "list":
            out.append(("GET", f"/api/{user}/tasks", [auth], b""))
        elif endpoint == "get":
            out.append(("GET", f"/api/{user}/tasks/{task}", [auth], b""))
        elif endpoint == "toggle":
            out.append(("PATCH", f"/api/{user}/tasks/{task}/complete", [auth], b""))
        else:
            writer = f"capw-{n % len(users)}"
            headers = [
                (b"authorization", b"Bearer " + tokens[writer].encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode()),
            ]
            out.append(("POST", f"/api/{writer}/tasks", headers, BODY))
    return out


async def _call(app: Any, method: str, path: str, headers: list[Any], body: bytes) -> int:
    """One request through the ASGI app, with a scope as uvicorn builds it; the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers],
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _drive(app: Any, requests: list[Any], count: int, concurrency: int) -> list[int]:
    """`count` requests, `concurrency` at a time (a closed loop, as wrk); the non-2xx statuses."""
    bad: list[int] = []
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < count:
            method, path, headers, body = requests[position % len(requests)]
            position += 1
            status = await _call(app, method, path, headers, body)
            if not 200 <= status < 300:
                bad.append(status)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return bad


async def _worker_main(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    """In the system's process: start the app, warm up, measure each endpoint."""
    tasks: dict[str, list[int]] = setup["tasks"]
    tokens: dict[str, str] = setup["tokens"]
    os.environ.update(DATABASE_URL=setup["database_url"], BETTER_AUTH_SECRET=SECRET)
    if args.worker == "ceiling":
        from loadtest.ceiling.app import app
    else:
        os.environ.update(MIGRATE_ON_START="false", LOG_LEVEL="INFO", LOG_FORMAT="json")
        from api.app import create_app

        app = create_app()
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        for endpoint in args.endpoints:
            requests = _requests(endpoint, tasks, tokens)
            await _drive(app, requests, args.warm_up, args.concurrency)
            started = time.process_time()
            bad = await _drive(app, requests, args.requests, args.concurrency)
            results[endpoint] = {
                "cpu_us": (time.process_time() - started) / args.requests * 1e6,
                "errors": len(bad),
                "statuses": sorted(set(bad))[:5],
            }
    return results


def _worker(args: argparse.Namespace) -> int:
    import uvloop

    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        os.dup2(devnull.fileno(), 1)  # structlog writes to the real stdout
        results = uvloop.run(_worker_main(args, json.loads(Path(args.setup).read_text())))
    Path(args.result).write_text(json.dumps(results))
    return 0


def _prepare(server_url: str, users: int) -> tuple[str, dict[str, Any]]:
    """A fresh database (migrated, seeded as loadtest.capacity's) and tokens; (url, setup)."""
    from loadtest.capacity import migrate, seed
    from loadtest.common import mint_token
    from loadtest.services import create_database

    database_url = create_database(server_url, prefix="bench_path")
    migrate(database_url)
    tasks = seed(database_url, users)
    names = [*tasks, *(f"capw-{n}" for n in range(users))]
    tokens = {name: mint_token(name, SECRET) for name in names}
    return database_url, {"database_url": database_url, "tasks": tasks, "tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtest.bench_request_path",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--systems", nargs="+", default=["service", "ceiling"],
                        choices=["service", "baseline", "ceiling"])  # fmt: skip
    parser.add_argument("--baseline", type=Path, help="a checkout of another revision")
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS)
    parser.add_argument("--requests", type=int, default=3000, help="per endpoint and round")
    parser.add_argument("--warm-up", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    if "baseline" in args.systems and args.baseline is None:
        parser.error("--systems baseline needs --baseline DIR")

    from loadtest.services import drop_database

    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    samples: dict[str, dict[str, list[float]]] = {s: {e: [] for e in args.endpoints}
                                                  for s in args.systems}  # fmt: skip
    errors = 0
    databases: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        setups: dict[str, Path] = {}
        try:
            for system in args.systems:
                url, setup = _prepare(args.server_url, args.users)
                databases.append(url)
                setups[system] = Path(tmp) / f"{system}.json"
                setups[system].write_text(json.dumps(setup))
            for round_ in range(1, args.rounds + 1):
                for system in args.systems:
                    tree = args.baseline if system == "baseline" else ROOT
                    result = Path(tmp) / f"{system}-{round_}.json"
                    # Run as a script, so a baseline tree need not have this file;
                    # PYTHONPATH puts the tree's api/ and repositories/ first.
                    command = [*pin, sys.executable, __file__,
                               "--worker", "ceiling" if system == "ceiling" else "service",
                               "--setup", str(setups[system]), "--result", str(result),
                               "--requests", str(args.requests), "--warm-up", str(args.warm_up),
                               "--concurrency", str(args.concurrency),
                               "--endpoints", *args.endpoints]  # fmt: skip
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    subprocess.run(command, cwd=tree, env=env, check=True, timeout=900)
                    for endpoint, figures in json.loads(result.read_text()).items():
                        samples[system][endpoint].append(figures["cpu_us"])
                        errors += figures["errors"]
                        if figures["errors"]:
                            print(f"{system} {endpoint}: non-2xx {figures['statuses']}")
                    line = "  ".join(f"{e} {samples[system][e][-1]:6.0f}" for e in args.endpoints)
                    print(f"[{round_}/{args.rounds}] {system:8} µs CPU/request  {line}", flush=True)
        finally:
            for url in databases:
                drop_database(args.server_url, url)

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}..{max(values):.0f})"

    print(f"\nµs of app CPU per request, c={args.concurrency}, {args.rounds} rounds of "
          f"{args.requests} (median, min..max)\n")  # fmt: skip
    print("| endpoint | " + " | ".join(args.systems) + " | ratios to the last |")
    print("| --- | " + " | ".join("---" for _ in args.systems) + " | --- |")
    last = args.systems[-1]
    for endpoint in args.endpoints:
        base = statistics.median(samples[last][endpoint])
        ratios = ", ".join(
            f"{s} {statistics.median(samples[s][endpoint]) / base:.2f}" for s in args.systems[:-1]
        )
        cells = " | ".join(fmt(samples[s][endpoint]) for s in args.systems)
        print(f"| {endpoint} | {cells} | {ratios} |")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
