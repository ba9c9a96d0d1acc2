"""Locust scenario: each simulated user is one Tasks API user with its own HS256 token.

Environment (set by loadtest/run.py, or by hand for `uv run locust -f loadtest/locustfile.py`):
  BETTER_AUTH_SECRET     the service's shared secret; tokens are minted with it (required)
  LOADTEST_USER_PREFIX   user ids are f"{prefix}-{n}" (default "lt"); the runner seeds them
  LOADTEST_IDENTITIES    how many distinct user ids the simulated users cycle through (100)
  LOADTEST_WAIT_MIN/MAX  think time between a user's requests, seconds (0.5 / 1.5)

Every URL is reported under its template (`name=`), so the stats have one row per endpoint.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `locust -f loadtest/locustfile.py` from anywhere
    sys.path.insert(0, _ROOT)

from loadtest.common import COMPLETE, LIST, LIST_QUERIES, ONE, mint_token  # noqa: E402

PREFIX = os.environ.get("LOADTEST_USER_PREFIX", "lt")
IDENTITIES = max(1, int(os.environ.get("LOADTEST_IDENTITIES", "100")))
WAIT_MIN = float(os.environ.get("LOADTEST_WAIT_MIN", "0.5"))
WAIT_MAX = float(os.environ.get("LOADTEST_WAIT_MAX", "1.5"))

# Every request's end time, name and duration, for the runner's exact percentiles over a
# steady-state window (Locust's own CSV rounds above 100 ms and counts the ramp-up).
_REQUEST_LOG = os.environ.get("LOADTEST_REQUEST_LOG")
_log_file = open(_REQUEST_LOG, "a", encoding="utf-8") if _REQUEST_LOG else None  # noqa: SIM115


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: Any, **_: Any) -> None:
    if _log_file is not None:
        failed = 1 if exception is not None else 0
        _log_file.write(f"{time.time():.4f},{request_type},{name},{response_time:.3f},{failed}\n")


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_: Any) -> None:
    if _log_file is not None:
        _log_file.write(f"{time.time():.4f},#spawned,{user_count},0,0\n")
        _log_file.flush()  # the runner waits for this line to start its window


@events.quitting.add_listener
def _close(**_: Any) -> None:
    if _log_file is not None:
        _log_file.flush()
        _log_file.close()


KEEP_AT_LEAST = 5  # below this, a delete turns into a create, so the user's list never empties

_next_identity = itertools.count()


class TasksUser(FastHttpUser):
    wait_time = between(WAIT_MIN, WAIT_MAX)
    # Fail fast instead of hiding a stuck server behind Locust's default 60 s timeouts.
    connection_timeout = 10.0
    network_timeout = 10.0

    def on_start(self) -> None:
        secret = os.environ.get("BETTER_AUTH_SECRET")
        if not secret:
            raise RuntimeError("BETTER_AUTH_SECRET must be set to mint the users' tokens")
        self.user_id = f"{PREFIX}-{next(_next_identity) % IDENTITIES}"
        self.headers = {"Authorization": f"Bearer {mint_token(self.user_id, secret)}"}
        self.base = f"/api/{self.user_id}/tasks"
        self.task_ids: list[int] = []
        # A user opens the app on its list: learn the ids the runner seeded.
        with self.client.get(
            self.base, headers=self.headers, name=LIST, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"list: status {resp.status_code}")
                return
            self.task_ids = [int(t["id"]) for t in resp.json()]

    def _pick(self) -> int | None:
        return random.choice(self.task_ids) if self.task_ids else None

    def _expect(self, resp: Any, status: int, what: str) -> bool:
        if resp.status_code != status:
            resp.failure(f"{what}: status {resp.status_code}, expected {status}")
            return False
        resp.success()
        return True

    @task(8)
    def list_tasks(self) -> None:
        query = random.choice(LIST_QUERIES)
        with self.client.get(
            self.base + query, headers=self.headers, name=LIST, catch_response=True
        ) as resp:
            self._expect(resp, 200, "list")

    @task(4)
    def get_task(self) -> None:
        task_id = self._pick()
        if task_id is None:
            self.create_task()
            return
        with self.client.get(
            f"{self.base}/{task_id}", headers=self.headers, name=ONE, catch_response=True
        ) as resp:
            self._expect(resp, 200, "get")

    @task(2)
    def create_task(self) -> None:
        body = {"title": f"Load task {random.randrange(10**9)}", "description": "from locust"}
        if random.random() < 0.3:
            body.pop("description")
        with self.client.post(
            self.base, json=body, headers=self.headers, name=LIST, catch_response=True
        ) as resp:
            if self._expect(resp, 201, "create"):
                self.task_ids.append(int(resp.json()["id"]))

    @task(2)
    def update_task(self) -> None:
        task_id = self._pick()
        if task_id is None:
            self.create_task()
            return
        body: dict[str, Any] = {"title": f"Renamed {random.randrange(10**9)}"}
        if random.random() < 0.5:
            body["description"] = None if random.random() < 0.5 else "edited under load"
        with self.client.put(
            f"{self.base}/{task_id}", json=body, headers=self.headers, name=ONE, catch_response=True
        ) as resp:
            self._expect(resp, 200, "update")

    @task(2)
    def toggle_task(self) -> None:
        task_id = self._pick()
        if task_id is None:
            self.create_task()
            return
        with self.client.patch(
            f"{self.base}/{task_id}/complete",
            headers=self.headers,
            name=COMPLETE,
            catch_response=True,
        ) as resp:
            self._expect(resp, 200, "toggle")

    @task(2)
    def delete_task(self) -> None:
        if len(self.task_ids) <= KEEP_AT_LEAST:
            self.create_task()
            return
        task_id = self.task_ids.pop(random.randrange(len(self.task_ids)))
        with self.client.delete(
            f"{self.base}/{task_id}", headers=self.headers, name=ONE, catch_response=True
        ) as resp:
            self._expect(resp, 204, "delete")
