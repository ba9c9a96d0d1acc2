"""uvicorn (httptools + uvloop, stock and with api/http_server.py's limits) against Granian,
one worker each, with wrk on loopback: a trivial ASGI app and this service's list endpoint,
at 10 and 100 connections, 3 runs of `--seconds` each; prints median and spread.

    DATABASE_URL=postgresql://… BETTER_AUTH_SECRET=… \\
        uv run --with granian python loadtest/bench_http_servers.py

Needs `wrk` and a migrated database (the list user gets 20 tasks). Figures: README, "HTTP server".
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(server: str, target: str, port: int) -> list[str]:
    factory = ["--factory"] if target.endswith("create_app") else []
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if server == "granian":
        return ["granian", "--interface", "asgi", "--loop", "uvloop", "--log-level", "warning",
                "--no-ws", *factory, *common, target]  # fmt: skip
    http = "httptools" if server == "uvicorn" else "api.http_server:BoundedHttpToolsProtocol"
    return [sys.executable, "-m", "uvicorn", "--http", http, "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning", *factory, *common, target]  # fmt: skip


def _wrk(url: str, connections: int, seconds: int, headers: list[str]) -> tuple[float, float, int]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--apps", default="trivial,list", help="comma-separated: trivial, list")
    args = parser.parse_args()
    assert shutil.which("wrk"), "wrk is needed"
    secret = os.environ["BETTER_AUTH_SECRET"]
    user = "bench-user"
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    env = {**os.environ, "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}
    cases = [
        ("trivial", "loadtest.trivial_asgi:app", "/", []),
        ("list", "api.app:create_app", f"/api/{user}/tasks", [f"Authorization: Bearer {token}"]),
    ]
    cases = [case for case in cases if case[0] in args.apps.split(",")]
    print("| app | server | c | req/s median (min-max) | p99 ms median (min-max) | non-2xx |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, target, path, headers in cases:
        for server in ("uvicorn", "uvicorn+limits", "granian"):
            port = _port()
            proc = subprocess.Popen(_command(server, target, port), cwd=ROOT, env=env)
            base = f"http://127.0.0.1:{port}"
            try:
                for _ in range(300):
                    try:
                        httpx.get(base + "/health", timeout=1)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                if name == "list":
                    h = {"Authorization": f"Bearer {token}"}
                    have = len(httpx.get(base + path, headers=h).json())
                    for i in range(have, 20):
                        httpx.post(base + path, json={"title": f"t{i}"}, headers=h)
                _wrk(base + path, 10, 2, headers)  # warm-up
                for connections in (10, 100):
                    runs = [_wrk(base + path, connections, args.seconds, headers)
                            for _ in range(args.runs)]  # fmt: skip
                    rps = [r for r, _, _ in runs]
                    p99 = [p for _, p, _ in runs]
                    errors = sum(e for _, _, e in runs)
                    print(
                        f"| {name} | {server} | {connections} | {statistics.median(rps):.0f} "
                        f"({min(rps):.0f}-{max(rps):.0f}) | {statistics.median(p99):.1f} "
                        f"({min(p99):.1f}-{max(p99):.1f}) | {errors} |",
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
