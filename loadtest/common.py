"""What the scenario and the runner share, without importing Locust (which patches with gevent)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

# Every run's output (git-ignored).
REPORTS = Path(__file__).resolve().parent / "reports"

# URL templates: the `name=` of each request, so Locust reports one row per endpoint.
LIST = "/api/{user_id}/tasks"
ONE = "/api/{user_id}/tasks/{task_id}"
COMPLETE = "/api/{user_id}/tasks/{task_id}/complete"

TOKEN_TTL = 6 * 3600

# What a task list UI asks for: the default view, filters, sorts, sometimes a page.
LIST_QUERIES: tuple[str, ...] = (
    "",
    "",
    "?status=pending",
    "?status=completed",
    "?sort=title",
    "?status=pending&sort=title",
    "?sort=created&order=desc",
    "?status=completed&sort=title&order=desc",
    "?limit=20",
    "?status=pending&limit=20&offset=20",
)


def mint_token(sub: str, secret: str, ttl: int = TOKEN_TTL) -> str:
    """An HS256 token as the frontend's own route signs it with BETTER_AUTH_SECRET."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")
