"""examples/nextjs end to end in a real Chromium: Next.js (`next build` + `next start`) on
http://localhost:3000 with real Better Auth (email + password, jwt plugin), the typed client,
and `tasks-api serve` on another loopback port verifying the EdDSA tokens through the JWKS at
BETTER_AUTH_URL. Everything is done by clicking in the UI.

The build is the slow part (about a minute on 2 cores): it goes to examples/nextjs/.next-e2e and
is reused while the sources it was built from (hashed) are unchanged. On failure, a screenshot,
the page's HTML and both servers' logs are saved under test-artifacts/frontend/.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from tests.browser.test_browser_cors import browser_context, wait_port_free  # noqa: F401
from tests.support import (
    ROOT,
    free_port,
    require,
    running_service,
    stop_process,
    wait_http,
)

APP_DIR = ROOT / "examples" / "nextjs"
CLIENT_DIR = ROOT / "clients" / "typescript"
NEXT = str(APP_DIR / "node_modules" / ".bin" / "next")
DIST_DIR = ".next-e2e"
ORIGIN = "http://localhost:3000"  # the contract's frontend origin; Better Auth's base URL
PORT = 3000
ARTEFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts")) / "frontend"
BUILD_TIMEOUT = 900.0
PASSWORD = "correct-horse-battery"


def _source_hash() -> str:
    """sha256 over every file the build reads: the app, the client, lockfiles and configs."""
    digest = hashlib.sha256()
    roots = [APP_DIR / "app", APP_DIR / "lib", CLIENT_DIR / "src"]
    files = [p for r in roots for p in sorted(r.rglob("*")) if p.is_file()]
    for name in ("package.json", "package-lock.json", "next.config.mjs", "tsconfig.json"):
        files.append(APP_DIR / name)
    files.append(CLIENT_DIR / "package-lock.json")
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _next_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", "NEXT_DIST_DIR": DIST_DIR, **extra}


@pytest.fixture(scope="session")
def nextjs_build() -> Path:
    """`next build` of examples/nextjs, once per source hash (a lock keeps parallel sessions
    from building into the same folder at once)."""
    require(shutil.which("node") is not None, "node missing (scripts/ci/setup-frontend.sh)")
    require(
        (APP_DIR / "node_modules" / "next" / "package.json").is_file()
        and (CLIENT_DIR / "node_modules" / "openapi-fetch" / "package.json").is_file(),
        "examples/nextjs or clients/typescript not installed: run scripts/ci/setup-frontend.sh",
    )
    dist = APP_DIR / DIST_DIR
    want = _source_hash()
    stamp = dist / "source.sha256"
    with open(APP_DIR / ".next-e2e.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dist / "BUILD_ID").is_file() and stamp.is_file() and stamp.read_text() == want:
            return dist
        shutil.rmtree(dist, ignore_errors=True)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        log = ARTEFACTS / "next-build.log"
        with open(log, "wb") as out:
            result = subprocess.run(
                ["nice", "-n", "5", NEXT, "build"],
                cwd=APP_DIR,
                env=_next_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        assert result.returncode == 0, log.read_text()[-4000:]
        stamp.write_text(want)
    return dist


@contextlib.contextmanager
def next_start(api_base: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`next start` on 127.0.0.1:3000; waits (bounded) while another test holds the port."""
    deadline = time.monotonic() + 120
    env = _next_env(
        BETTER_AUTH_URL=ORIGIN,
        BETTER_AUTH_SECRET=secrets.token_hex(32),
        TASKS_API_URL=api_base,
    )
    while True:
        wait_port_free(PORT, timeout=max(1.0, deadline - time.monotonic()))
        out = open(log_path, "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [NEXT, "start", "-H", "127.0.0.1", "-p", str(PORT)],
            cwd=APP_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{PORT}/api/auth/jwks", timeout=60, proc=proc)
            break
        except RuntimeError:
            # Lost a race for the port to another run: wait for it again.
            stop_process(proc)
            out.close()
            if "EADDRINUSE" not in log_path.read_text() or time.monotonic() > deadline:
                raise
        except BaseException:
            stop_process(proc)
            out.close()
            raise
    try:
        yield proc
    finally:
        stop_process(proc)
        out.close()


# ---- the UI, as a user drives it ------------------------------------------------------------


def titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#tasks li .title").all_text_contents()]


def wait_state(page: Any, state: str) -> None:
    try:
        page.wait_for_function(
            "s => document.getElementById('state')?.textContent === s", arg=state
        )
    except Exception as exc:
        shown = page.locator("#error").all_text_contents()
        raise AssertionError(f"page never reached {state!r}; error shown: {shown}") from exc


def wait_ready(page: Any) -> None:
    wait_state(page, "ready")


def expect_titles(page: Any, expected: list[str]) -> None:
    """The list shows exactly `expected`, in order, and the page is idle without an error."""
    try:
        page.wait_for_function(
            """want => {
                const state = document.getElementById('state');
                const got = [...document.querySelectorAll('#tasks li .title')]
                    .map(e => e.textContent.trim());
                return state?.textContent === 'ready'
                    && JSON.stringify(got) === JSON.stringify(want);
            }""",
            arg=expected,
        )
    except Exception as exc:
        raise AssertionError(
            f"expected {expected}, page shows {titles(page)}, "
            f"error {page.locator('#error').text_content()!r}"
        ) from exc


def sign_up(page: Any, email: str) -> None:
    page.goto(ORIGIN + "/")
    page.wait_for_selector("#auth-form")
    if page.locator("#name").count() == 0:
        page.click("#switch-mode")
    page.fill("#name", email.split("@")[0])
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / "sign-up.png"))
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#submit")
    page.wait_for_function("e => document.getElementById('who')?.textContent === e", arg=email)
    wait_ready(page)


def sign_in(page: Any, email: str) -> None:
    page.wait_for_selector("#auth-form")
    if page.locator("#name").count() > 0:
        page.click("#switch-mode")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("#submit")
    page.wait_for_function("e => document.getElementById('who')?.textContent === e", arg=email)
    wait_ready(page)


def sign_out(page: Any) -> None:
    page.click("#sign-out")
    page.wait_for_selector("#auth-form")


def session_user_id(page: Any) -> str:
    user_id: str = page.evaluate(
        "async () => (await (await fetch('/api/auth/get-session')).json()).user.id"
    )
    return user_id


def current_token(page: Any) -> str:
    """The token the app sends: Better Auth's /api/auth/token with the session cookie."""
    token: str = page.evaluate("async () => (await (await fetch('/api/auth/token')).json()).token")
    return token


def add_task(page: Any, title: str, description: str = "") -> None:
    page.fill("#title", title)
    page.fill("#description", description)
    page.click("#add")
    page.wait_for_function(
        "t => [...document.querySelectorAll('#tasks li .title')].some(e => e.textContent === t)",
        arg=title,
    )
    wait_ready(page)


def task_row(page: Any, title: str) -> Any:
    return page.locator("#tasks li", has=page.locator(".title", has_text=re.compile(f"^{title}$")))


@contextlib.contextmanager
def artefacts_on_failure(page: Any, name: str, logs: list[Path]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
            (ARTEFACTS / f"{name}.html").write_text(page.content())
        for log in logs:
            with contextlib.suppress(OSError):
                shutil.copy(log, ARTEFACTS / log.name)
        raise


# ---- the test -------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT + 300)
def test_nextjs_example_signs_up_and_manages_tasks_in_chromium(
    nextjs_build: Path,
    database_url: str,
    browser_context: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    next_log, api_log = tmp_path / "next-start.log", tmp_path / "tasks-api.log"
    api_env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_URL": ORIGIN,
        "JWT_ISSUER": ORIGIN,
        "JWT_AUDIENCE": ORIGIN,
        "CORS_ORIGINS": ORIGIN,
        "DB_POOL_MIN": "1",
    }
    # The API's port is chosen first so that Next.js can be told it; Next.js starts first so
    # that the API's JWKS warm-up finds Better Auth.
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    with (
        next_start(api, next_log),
        running_service(api_env, port=api_port, log_path=api_log),
    ):
        page = browser_context.new_page()
        page.set_default_timeout(20_000)
        console: list[str] = []
        page.on("console", lambda msg: console.append(msg.text))
        hosts: set[str] = set()
        page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or ""))
        email_a = f"a-{uuid.uuid4().hex[:10]}@example.com"
        email_b = f"b-{uuid.uuid4().hex[:10]}@example.com"

        with artefacts_on_failure(page, "user-a", [next_log, api_log]):
            sign_up(page, email_a)
            expect_titles(page, [])
            user_a = session_user_id(page)

            add_task(page, "Buy milk", "two litres")
            add_task(page, "Walk the dog")
            expect_titles(page, ["Buy milk", "Walk the dog"])

            task_row(page, "Buy milk").locator(".edit").click()
            page.fill("#tasks .edit-title", "Buy oat milk")
            page.click("#tasks .save")
            expect_titles(page, ["Buy oat milk", "Walk the dog"])

            # A controlled checkbox: checked once the API has answered.
            task_row(page, "Walk the dog").locator(".toggle").click()
            page.wait_for_selector("#tasks li.done")
            expect_titles(page, ["Buy oat milk", "Walk the dog"])

            page.select_option("#filter", "pending")
            expect_titles(page, ["Buy oat milk"])
            page.select_option("#filter", "completed")
            expect_titles(page, ["Walk the dog"])
            page.select_option("#filter", "all")
            page.select_option("#sort", "title")
            page.select_option("#order", "desc")
            expect_titles(page, ["Walk the dog", "Buy oat milk"])
            page.select_option("#sort", "created")
            page.select_option("#order", "asc")
            expect_titles(page, ["Buy oat milk", "Walk the dog"])

            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "user-a-list.png"), full_page=True)
            task_row(page, "Buy oat milk").locator(".delete").click()
            expect_titles(page, ["Walk the dog"])

            page.reload()
            expect_titles(page, ["Walk the dog"])
            assert task_row(page, "Walk the dog").locator(".toggle").is_checked()
            assert page.locator("#error").text_content() == "", console

            # What the app sent is a real Better Auth token, and what it did is what the API holds.
            token_a = current_token(page)
            assert jwt.get_unverified_header(token_a)["alg"] == "EdDSA"
            assert jwt.decode(token_a, options={"verify_signature": False})["sub"] == user_a
            held = httpx.get(
                f"{api}/api/{user_a}/tasks", headers={"Authorization": f"Bearer {token_a}"}
            )
            assert [(t["title"], t["completed"]) for t in held.json()] == [("Walk the dog", True)]

            sign_out(page)

        with artefacts_on_failure(page, "user-b", [next_log, api_log]):
            sign_up(page, email_b)
            expect_titles(page, [])
            assert page.locator("#count").text_content() == "0"
            user_b = session_user_id(page)
            assert user_b != user_a

            # B opens A's list: B's token on A's path is refused, and the page says so.
            page.goto(f"{ORIGIN}/?user={user_a}")
            wait_state(page, "error")
            assert page.locator("#error").text_content().startswith("403"), page.content()
            assert titles(page) == []
            page.screenshot(path=str(ARTEFACTS / "user-b-forbidden.png"), full_page=True)
            page.goto(ORIGIN + "/")
            expect_titles(page, [])
            sign_out(page)

        with artefacts_on_failure(page, "user-a-again", [next_log, api_log]):
            sign_in(page, email_a)
            expect_titles(page, ["Walk the dog"])
            # A's token on B's path: 403 in the UI too.
            page.goto(f"{ORIGIN}/?user={user_b}")
            wait_state(page, "error")
            assert page.locator("#error").text_content().startswith("403"), page.content()
            assert titles(page) == []

    # Nothing but the app and the API was ever asked for: no fonts, CDN or telemetry.
    assert hosts == {"localhost", "127.0.0.1"}, hosts
