"""Schemathesis against the service's own /openapi.json: no 5xx, every response as documented."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import make_token

FUZZ_USER = "fuzz-user-1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Bounded: a few dozen examples per operation keeps the two runs well under a minute.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))  # raise it for a deeper local run
INVALID_TOKENS = [
    make_token(FUZZ_USER, secret="not-the-secret-0123456789abcdef0123456789"),
    make_token(FUZZ_USER, ttl=-3600),
    "not.a.jwt",
    make_token(None),
]


@pytest.fixture(scope="module")
def operations(service_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{service_url}/openapi.json")
    schema.config.update(base_url=service_url)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, mode: GenerationMode, examples: int, run: Any) -> None:
    path_parameters = {"user_id": FUZZ_USER} if "{user_id}" in operation.path else None

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def each(case: Any) -> None:
        run(case)

    each()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_valid_token_no_server_error_and_documented_responses(
    operations: list[Any], service_url: str, mode: GenerationMode
) -> None:
    """The token's own user in the path: otherwise every call stops at 403 before the handler."""
    headers = {"Authorization": f"Bearer {make_token(FUZZ_USER)}"}

    seen: set[int] = set()

    def run(case: Any) -> None:
        response = case.call_and_validate(base_url=service_url, headers=headers, checks=CHECKS)
        seen.add(response.status_code)

    fuzzed = 0
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/api/"):
            continue  # nothing to negate: no parameters, no body
        _fuzz(operation, mode, MAX_EXAMPLES, run)
        fuzzed += 1
    assert fuzzed >= 6
    # The generated requests got past authentication into the handlers and the validation.
    expected = {200, 201} if mode is GenerationMode.POSITIVE else {422}
    assert expected <= seen, seen


def test_invalid_tokens_get_documented_401(operations: list[Any], service_url: str) -> None:
    def run(case: Any) -> None:
        for token in INVALID_TOKENS:
            headers = {"Authorization": f"Bearer {token}"}
            response = case.call_and_validate(base_url=service_url, headers=headers, checks=CHECKS)
            if case.operation.path.startswith("/api/"):
                assert response.status_code == 401, response.text
                challenge = response.headers.get("www-authenticate") or [""]
                assert challenge[0].lower().startswith("bearer")

    for operation in operations:
        _fuzz(operation, GenerationMode.POSITIVE, MAX_EXAMPLES // 3, run)


def test_openapi_documents_errors_and_bearer_scheme(service_url: str) -> None:
    doc = httpx.get(f"{service_url}/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    for path, item in doc["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in item.items():
            assert op.get("security"), f"{method} {path} has no security"
            for code in ("401", "403", "500"):
                assert code in op["responses"], f"{method} {path} misses {code}"
