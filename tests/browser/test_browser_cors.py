"""A real headless Chromium runs a small page on http://localhost:3000 against the real server.

The page (page/index.html) creates, lists, toggles, edits and deletes tasks with fetch() and a
Bearer token, against the API on another port: every call is cross-origin, so it passes only if
the API's CORS answers let the browser through. The same page from an origin that is not in
CORS_ORIGINS must be blocked by the browser.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from tests.support import SECRET, free_port, make_token, new_user_id, require, running_service

PAGE_DIR = Path(__file__).resolve().parent / "page"
CHROMIUM = "/usr/bin/chromium"
FRONTEND_PORT = 3000  # the contract's default frontend origin is http://localhost:3000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def wait_port_free(port: int, timeout: float) -> None:
    """Another run may hold the port for a moment: wait for it rather than fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.5)


@contextlib.contextmanager
def static_server(port: int, *, wait_for_port: float = 0.0) -> Iterator[None]:
    """Serve page/ on 127.0.0.1:port from a thread; shut down afterwards."""
    handler = functools.partial(QuietHandler, directory=str(PAGE_DIR))
    deadline = time.monotonic() + wait_for_port
    while True:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError as exc:
            # Another run may hold :3000 for a moment; wait for it rather than skip.
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def api_base(database_url: str) -> Iterator[str]:
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "CORS_ORIGINS": "http://localhost:3000",
        "DB_POOL_MIN": "1",
    }
    with running_service(env) as (base, _proc):
        yield base


@pytest.fixture
def browser_context() -> Iterator[Any]:
    require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "python playwright is not installed (uv sync)")
        raise
    user_data_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                user_data_dir,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                timeout=30_000,
            )
            context.set_default_timeout(10_000)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(user_data_dir, ignore_errors=True)


def page_url(origin: str, api: str, user_id: str, token: str) -> str:
    return f"{origin}/index.html?{urlencode({'api': api, 'user': user_id})}#token={token}"


def page_log(page: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(page.locator("#log").text_content() or "[]")
    return entries


def wait_status(page: Any, status: str) -> None:
    try:
        page.wait_for_function(
            "s => document.getElementById('status').textContent === s", arg=status
        )
    except Exception as exc:
        state = page.evaluate(
            "() => [status.textContent, error.textContent, log.textContent].join(' | ')"
        )
        raise AssertionError(f"page never reached {status!r}: {state}") from exc


def wait_title(page: Any, title: str) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('#tasks .title')].some(e => e.textContent === t)",
        arg=title,
    )


def titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#tasks li .title").all_text_contents()]


def run_task_flow(page: Any, console: list[str]) -> None:
    """Create two tasks, toggle one, edit it, delete the other, by clicking; every call 2xx."""
    for title in ("Buy milk", "Walk the dog"):
        page.fill("#title", title)
        page.click("#add")
        wait_title(page, title)
    wait_status(page, "ready")
    assert titles(page) == ["Buy milk", "Walk the dog"]

    milk = page.locator("#tasks li", has_text="Buy milk")
    milk.locator(".toggle").check()
    page.wait_for_selector("#tasks li.done")
    wait_status(page, "ready")

    page.locator("#tasks li", has_text="Buy milk").locator(".edit").click()
    page.fill("#tasks .edit-title", "Buy oat milk")
    page.click("#tasks .save")
    wait_title(page, "Buy oat milk")
    wait_status(page, "ready")

    page.locator("#tasks li", has_text="Walk the dog").locator(".delete").click()
    page.wait_for_function("() => document.querySelectorAll('#tasks li').length === 1")
    wait_status(page, "ready")
    assert titles(page) == ["Buy oat milk"]
    assert page.locator("#error").text_content() == "", console

    log = page_log(page)
    assert not [e for e in log if e.get("blocked")], (log, console)
    assert {e["method"] for e in log} == {"GET", "POST", "PATCH", "PUT", "DELETE"}
    assert all(200 <= e["status"] < 300 for e in log), log
    # Exposed headers are readable from script only through Access-Control-Expose-Headers.
    assert all(e["requestId"] for e in log), log
    assert all(e["location"] for e in log if e["method"] == "POST"), log


def test_page_on_localhost_3000_manages_tasks_through_cors(
    api_base: str, browser_context: Any
) -> None:
    user_id = new_user_id()
    token = make_token(user_id)
    with static_server(FRONTEND_PORT, wait_for_port=30):
        page = browser_context.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(msg.text))
        page.goto(page_url("http://localhost:3000", api_base, user_id, token))
        wait_status(page, "ready")
        assert titles(page) == []

        run_task_flow(page, console)

    # What the browser did is what the API holds.
    listed = httpx.get(
        f"{api_base}/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert [(t["title"], t["completed"]) for t in listed] == [("Buy oat milk", True)]


def test_page_reads_etag_cross_origin_and_sends_conditional_headers(
    api_base: str, browser_context: Any
) -> None:
    """ETag is exposed to script, and If-None-Match, If-Match and Idempotency-Key pass the
    preflight (contract, "Conditional requests and safe retries")."""
    user_id = new_user_id()
    token = make_token(user_id)
    with static_server(FRONTEND_PORT, wait_for_port=30):
        page = browser_context.new_page()
        page.goto(page_url("http://localhost:3000", api_base, user_id, token))
        wait_status(page, "ready")
        out = page.evaluate("() => conditionalCalls()")
    assert out["listStatus"] == 200 and out["listTag"], out
    assert out["pollStatus"] == 304 and out["pollTag"] == out["listTag"], out
    assert out["pollBody"] == ""
    assert out["createStatuses"] == [201, 201] and out["sameTask"], out
    assert out["putStatus"] == 200 and out["staleStatus"] == 412, out
    assert out["afterStatus"] == 200 and out["afterTitles"] == ["Edited once"], out


def test_page_on_a_disallowed_origin_is_blocked(api_base: str, browser_context: Any) -> None:
    user_id = new_user_id()
    token = make_token(user_id)
    other = free_port()
    origin = f"http://127.0.0.1:{other}"
    with static_server(other):
        page = browser_context.new_page()
        page.goto(page_url(origin, api_base, user_id, token))
        wait_status(page, "blocked")
        page.fill("#title", "must not arrive")
        page.click("#add")
        page.wait_for_function(
            "() => JSON.parse(document.getElementById('log').textContent).length >= 2"
        )
        wait_status(page, "blocked")
        log = page_log(page)
        assert [e["method"] for e in log] == ["GET", "POST"]
        assert all(e.get("blocked") for e in log), log
        assert titles(page) == []

    # The API refused the preflight for that origin, so the POST was never sent.
    preflight = httpx.options(
        f"{api_base}/api/{user_id}/tasks",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    listed = httpx.get(
        f"{api_base}/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200 and listed.json() == []


def test_signed_in_with_real_better_auth_on_localhost_3000(
    database_url: str, browser_context: Any, tmp_path: Path
) -> None:
    """The whole frontend flow: Better Auth (jwt plugin) serves the page on localhost:3000, as a
    Next.js app would; the page signs up, takes its EdDSA token from /api/auth/token and calls
    the API, which verifies it with the JWKS at BETTER_AUTH_URL."""
    from tests.betterauth.harness import better_auth

    wait_port_free(FRONTEND_PORT, timeout=30)
    with better_auth(
        "EdDSA", port=FRONTEND_PORT, host="localhost", STATIC_DIR=str(PAGE_DIR)
    ) as auth_server:
        env = {
            "DATABASE_URL": database_url,
            "BETTER_AUTH_URL": "http://localhost:3000",
            "JWT_ISSUER": "http://localhost:3000",
            "JWT_AUDIENCE": "http://localhost:3000",
            "CORS_ORIGINS": "http://localhost:3000",
            "DB_POOL_MIN": "1",
        }
        with running_service(env, log_path=tmp_path / "api.log") as (api, _proc):
            page = browser_context.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            email = f"{new_user_id()}@example.com"
            query = urlencode({"api": api, "signup": email})
            page.goto(f"{auth_server.base_url}/index.html?{query}")
            wait_status(page, "ready")
            user_id, token = page.evaluate("() => [USER, TOKEN]")
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
            assert header["alg"] == "EdDSA" and claims["sub"] == user_id
            assert claims["iss"] == claims["aud"] == "http://localhost:3000"
            assert claims["email"] == email

            run_task_flow(page, console)

            listed = httpx.get(
                f"{api}/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"}
            ).json()
            assert [(t["title"], t["completed"]) for t in listed] == [("Buy oat milk", True)]
