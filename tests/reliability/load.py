"""A bounded, concurrent load of every task endpoint; each response is checked."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.support import auth, new_user_id


@dataclass
class LoadResult:
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: int, errors: list[str]) -> None:
        with self.lock:
            self.ok += ok
            self.errors.extend(errors)


def crud_cycle(client: httpx.Client, user: str, n: int) -> tuple[int, list[str]]:
    """Create, list, get, update, toggle, set, page, delete, get again: 9 checked requests."""
    h = auth(user)
    base = f"/api/{user}/tasks"
    errors: list[str] = []
    ok = 0

    def check(resp: httpx.Response, status: int) -> bool:
        nonlocal ok
        if resp.status_code == status:
            ok += 1
            return True
        errors.append(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code} "
                      f"{resp.text[:200]}")  # fmt: skip
        return False

    created = client.post(base, json={"title": f"task {n}", "description": "load"}, headers=h)
    if not check(created, 201):
        return ok, errors
    task_id = created.json()["id"]
    listed = client.get(base, headers=h)
    if check(listed, 200) and task_id not in [t["id"] for t in listed.json()]:
        errors.append(f"list of {user} misses task {task_id}")
    got = client.get(f"{base}/{task_id}", headers=h)
    if check(got, 200) and got.json()["title"] != f"task {n}":
        errors.append(f"get {task_id}: wrong title {got.json()['title']!r}")
    put = client.put(f"{base}/{task_id}", json={"title": f"task {n} v2"}, headers=h)
    if check(put, 200) and put.json()["title"] != f"task {n} v2":
        errors.append(f"put {task_id}: not applied")
    toggled = client.patch(f"{base}/{task_id}/complete", headers=h)
    if check(toggled, 200) and toggled.json()["completed"] is not True:
        errors.append(f"toggle {task_id}: not completed")
    unset = client.patch(f"{base}/{task_id}/complete", json={"completed": False}, headers=h)
    if check(unset, 200) and unset.json()["completed"] is not False:
        errors.append(f"set {task_id}: still completed")
    page = client.get(base, params={"status": "pending", "sort": "title", "limit": 5}, headers=h)
    if check(page, 200) and "x-total-count" not in page.headers:
        errors.append("paged list without X-Total-Count")
    check(client.delete(f"{base}/{task_id}", headers=h), 204)
    check(client.get(f"{base}/{task_id}", headers=h), 404)
    return ok, errors


def run_load(
    base_url: str, *, workers: int = 8, cycles: int = 8, time_budget: float = 60.0
) -> LoadResult:
    """`workers` users in parallel, each running up to `cycles` CRUD cycles."""
    result = LoadResult()
    deadline = time.monotonic() + time_budget

    def worker(_: int) -> None:
        user = new_user_id()
        with httpx.Client(base_url=base_url, timeout=20.0) as client:
            for n in range(cycles):
                if time.monotonic() > deadline:
                    result.record(0, [f"time budget of {time_budget}s exhausted"])
                    return
                try:
                    ok, errors = crud_cycle(client, user, n)
                except httpx.HTTPError as exc:
                    ok, errors = 0, [f"{type(exc).__name__}: {exc}"]
                result.record(ok, errors)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(worker, range(workers)))
    return result
