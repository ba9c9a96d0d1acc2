"""Row factory and response serialization: CPU per list response, in process, no database.

  uv run python -m loadtest.bench_serialization

What a list request costs between "rows fetched" and "bytes on the socket", for 50 and 1,000
tasks, by way of FastAPI's real routing and response handling (an ASGI call, no network):
  rows:  tuple rows + model_construct (the repository today) | dict_row + model_validate
  out:   response_model=list[TaskPublic] (FastAPI validates, then json.dumps) |
         TypeAdapter(list[TaskPublic]).dump_json in pydantic-core, returned as a Response
CPU time of this process (time.process_time, steadier than wall time on a shared machine),
medians of interleaved repetitions, with the spread.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi import FastAPI, Response  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from repositories.models import TASK_COLUMNS, TaskPublic  # noqa: E402

LIST_ADAPTER = TypeAdapter(list[TaskPublic])


def fake_rows(n: int) -> list[tuple[Any, ...]]:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        (
            i,
            "user-0123456789abcdef",
            f"Task number {i} with a title",
            None if i % 3 == 0 else "a description of moderate length " * 2,
            i % 2 == 0,
            start + timedelta(minutes=i),
            start + timedelta(minutes=i, seconds=7),
        )
        for i in range(1, n + 1)
    ]


def construct(rows: list[tuple[Any, ...]]) -> list[TaskPublic]:
    return [TaskPublic.model_construct(**dict(zip(TASK_COLUMNS, r, strict=True))) for r in rows]


def validate(rows: list[tuple[Any, ...]]) -> list[TaskPublic]:
    dicts = [dict(zip(TASK_COLUMNS, r, strict=True)) for r in rows]  # what dict_row hands over
    return [TaskPublic.model_validate(d) for d in dicts]


def build_app(rows: list[tuple[Any, ...]]) -> FastAPI:
    app = FastAPI()

    @app.get("/model-construct", response_model=list[TaskPublic])
    async def a() -> list[TaskPublic]:
        return construct(rows)

    @app.get("/model-validate", response_model=list[TaskPublic])
    async def b() -> list[TaskPublic]:
        return validate(rows)

    @app.get("/dump-json")
    async def c() -> Response:
        return Response(LIST_ADAPTER.dump_json(construct(rows)), media_type="application/json")

    return app


async def call(app: FastAPI, path: str) -> bytes:
    body: list[bytes] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(body)


async def bench(n: int, reps: int) -> dict[str, list[float]]:
    app = build_app(fake_rows(n))
    paths = ["/model-construct", "/model-validate", "/dump-json"]
    outputs = {p: await call(app, p) for p in paths}
    # The three must say the same thing, byte for byte apart from JSON spacing.
    import json

    decoded = {p: json.loads(o) for p, o in outputs.items()}
    assert decoded["/model-construct"] == decoded["/model-validate"] == decoded["/dump-json"]
    samples: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(reps):
        for p in paths:
            started = time.process_time()
            await call(app, p)
            samples[p].append(1000 * (time.process_time() - started))
    return samples


def main() -> int:
    print("| tasks | path | median ms [p10..p90] | vs today |")
    print("| --- | --- | --- | --- |")
    for n, reps in ((50, 400), (1000, 60)):
        samples = asyncio.run(bench(n, reps))
        base = statistics.median(samples["/model-construct"])
        for path, values in samples.items():
            q = statistics.quantiles(values, n=10)
            med = statistics.median(values)
            print(f"| {n} | {path} | {med:.3f} [{q[0]:.3f}..{q[-1]:.3f}] | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
