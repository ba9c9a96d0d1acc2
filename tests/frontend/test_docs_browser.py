"""/docs renders in a real Chromium that can reach nothing but the service: every request to
another host is aborted, and the page must still show every operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.test_browser_cors import browser_context  # noqa: F401
from tests.support import SECRET, running_service

OPERATIONS = ("listTasks", "createTask", "getTask", "updateTask", "completeTask", "deleteTask")


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "DB_POOL_MIN": "1"}
    log: Path = tmp_path_factory.mktemp("docs") / "api.log"
    with running_service(env, log_path=log) as (base, _proc):
        yield base


def offline_page(context: Any, base: str) -> tuple[Any, list[str]]:
    """A page whose requests to any host but the service are aborted (and recorded)."""
    allowed = urlsplit(base).netloc
    blocked: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).netloc == allowed:
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page = context.new_page()
    page.route("**/*", route)
    return page, blocked


def test_swagger_ui_renders_offline(api: str, browser_context: Any) -> None:  # noqa: F811
    page, blocked = offline_page(browser_context, api)
    page.goto(api + "/docs")
    # Swagger UI names each operation's block by tag and operationId.
    for operation in OPERATIONS:
        page.wait_for_selector(f"#operations-tasks-{operation}", state="attached")
    assert page.locator(".swagger-ui .info .title").first.inner_text().startswith("Tasks API")
    assert blocked == []
