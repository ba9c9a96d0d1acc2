"""/openapi.json documents every endpoint's errors with the error model and the bearer scheme."""

from __future__ import annotations

import httpx

TASK_OPERATIONS = {
    ("/api/{user_id}/tasks", "get"),
    ("/api/{user_id}/tasks", "post"),
    ("/api/{user_id}/tasks/{task_id}", "get"),
    ("/api/{user_id}/tasks/{task_id}", "put"),
    ("/api/{user_id}/tasks/{task_id}", "delete"),
    ("/api/{user_id}/tasks/{task_id}/complete", "patch"),
}


async def test_openapi_documents_errors_and_bearer_security(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    schemas = spec["components"]["schemas"]
    assert {
        "ErrorResponse",
        "ValidationErrorResponse",
        "TaskPublic",
        "TaskCreate",
        "TaskUpdate",
    } <= set(schemas)
    found = set()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if (path, method) not in TASK_OPERATIONS:
                continue
            found.add((path, method))
            assert operation["security"], (path, method)
            responses = operation["responses"]
            for code in ("401", "403", "500"):
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (path, method, code)
            if "{task_id}" in path:
                assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorResponse"
                )
            if (method in ("post", "put", "get") and path.endswith("tasks")) or method == "put":
                ref = responses["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ValidationErrorResponse"), (path, method)
            assert "WWW-Authenticate" in responses["401"].get("headers", {})
    assert found == TASK_OPERATIONS


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()
