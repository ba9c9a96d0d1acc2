"""Data for a run: users and tasks seeded in SQL (or through the API), and a warm-up."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import psycopg

from loadtest.common import LIST_QUERIES, mint_token

SEED_USERS = """
INSERT INTO users (id) SELECT %(prefix)s || '-' || g FROM generate_series(0, %(n)s - 1) AS g
ON CONFLICT (id) DO NOTHING
"""
SEED_TASKS = """
INSERT INTO tasks (user_id, title, description, completed, created_at, updated_at)
SELECT %(prefix)s || '-' || u,
       'Seeded task ' || t || ' ' || substr(md5(u::text || ':' || t::text), 1, 8),
       CASE WHEN t %% 2 = 0 THEN 'seeded description ' || t END,
       t %% 3 = 0,
       now() - make_interval(mins => t),
       now() - make_interval(mins => t)
FROM generate_series(0, %(n)s - 1) AS u CROSS JOIN generate_series(1, %(k)s) AS t
"""


def seed_sql(database_url: str, prefix: str, identities: int, per_user: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SEED_USERS, {"prefix": prefix, "n": identities})
        conn.execute(SEED_TASKS, {"prefix": prefix, "n": identities, "k": per_user})
        conn.execute("ANALYZE tasks")


def seed_api(host: str, secret: str, prefix: str, identities: int, per_user: int) -> None:
    """Without database access: through the API, one request at a time (bounded in count)."""
    with httpx.Client(base_url=host, timeout=10.0) as client:
        for n in range(identities):
            user = f"{prefix}-{n}"
            headers = {"Authorization": f"Bearer {mint_token(user, secret, 600)}"}
            for t in range(per_user):
                body = {"title": f"Seeded task {t}", "description": None if t % 2 else "seeded"}
                resp = client.post(f"/api/{user}/tasks", json=body, headers=headers)
                resp.raise_for_status()


async def _warm_up(host: str, secret: str, prefix: str, seconds: float, concurrency: int) -> int:

    deadline = time.monotonic() + seconds
    done = 0

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal done
        user = f"{prefix}-warm-{n}"
        client.headers["Authorization"] = f"Bearer {mint_token(user, secret, 600)}"
        base = f"/api/{user}/tasks"
        while time.monotonic() < deadline:
            created = await client.post(base, json={"title": "warm-up", "description": "w"})
            task = f"{base}/{created.json()['id']}"
            await client.get(base + random.choice(LIST_QUERIES))
            await client.get(task)
            await client.put(task, json={"title": "warm-up again"})
            await client.patch(task + "/complete")
            await client.delete(task)
            done += 6

    async def main() -> None:
        clients = [httpx.AsyncClient(base_url=host, timeout=10.0) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(worker(c, n) for n, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.aclose()

    await main()
    return done


def warm_up(host: str, secret: str, prefix: str, seconds: float, concurrency: int = 20) -> int:
    """Every endpoint, concurrently, for a few seconds before measuring: the pool grows to its
    working size, statements get prepared, lazy imports and caches fill. A long-running service
    is warm; without this the first second after spawning dominates every p99."""

    if seconds <= 0:
        return 0
    return asyncio.run(_warm_up(host, secret, prefix, seconds, concurrency))
