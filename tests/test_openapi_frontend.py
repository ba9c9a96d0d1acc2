"""What a frontend developer relies on: stable operation ids, documented response headers, and
a /docs that works without internet (contract, "Service endpoints")."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

OPERATION_IDS = {
    ("/api/{user_id}/tasks", "get"): "listTasks",
    ("/api/{user_id}/tasks", "post"): "createTask",
    ("/api/{user_id}/tasks/{task_id}", "get"): "getTask",
    ("/api/{user_id}/tasks/{task_id}", "put"): "updateTask",
    ("/api/{user_id}/tasks/{task_id}/complete", "patch"): "completeTask",
    ("/api/{user_id}/tasks/{task_id}", "delete"): "deleteTask",
}


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


async def test_task_operations_have_the_contract_operation_ids(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    found = {
        (path, method): operation.get("operationId")
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if path.startswith("/api/")
    }
    assert found == OPERATION_IDS


async def test_list_and_create_document_their_response_headers(
    client: httpx.AsyncClient,
) -> None:
    paths = (await _spec(client))["paths"]
    listed = paths["/api/{user_id}/tasks"]["get"]["responses"]["200"]
    assert listed["headers"]["X-Total-Count"]["schema"]["type"] == "integer"
    assert listed["content"]["application/json"]["schema"]["type"] == "array"
    created = paths["/api/{user_id}/tasks"]["post"]["responses"]["201"]
    assert created["headers"]["Location"]["schema"]["type"] == "string"
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/TaskPublic")


class _References(HTMLParser):
    """Every URL a page loads or links to: src, href, and Swagger UI's `url:`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)
        self._script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)


async def test_docs_page_loads_everything_from_the_service(client: httpx.AsyncClient) -> None:
    page = "/docs"
    expected = {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    # No host other than the service: no absolute or scheme-relative URL anywhere in the page
    # (a CDN script, Google Fonts, the validator badge of swagger.io).
    assert not re.search(r"(https?:)?//[A-Za-z0-9.-]", html), html
    parser = _References()
    parser.feed(html)
    assert expected <= {url.rsplit("/", 1)[-1] for url in parser.urls}, parser.urls
    for url in parser.urls:
        target = urljoin(f"http://testserver{page}", url)
        assert urlsplit(target).netloc == "testserver", url
        asset = await client.get(target)
        assert asset.status_code == 200, (url, asset.status_code)
        assert asset.content, url


async def test_docs_assets_serve_only_the_listed_files(client: httpx.AsyncClient) -> None:
    for name in ("core.py", "..%2Fcore.py", "%2E%2E%2F__init__.py", "redoc.standalone.js"):
        response = await client.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.json()["status_code"] == 404


async def test_redoc_is_not_served(client: httpx.AsyncClient) -> None:
    """ReDoc's bundle fetches its logo from a CDN, so it is not offered (see api/routes/docs.py)."""
    response = await client.get("/redoc")
    assert response.status_code == 404
