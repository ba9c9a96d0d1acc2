"""Authentication and ownership: every 401 cause, 403, and the order of checks."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import SECRET, auth, make_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(payload: dict[str, object], alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


async def _assert_401(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["status_code"] == 401 and isinstance(body["detail"], str)


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


NOW = int(time.time())
CASES = {
    "missing header": None,
    "other scheme": "Basic dXNlcjpwYXNz",
    "empty bearer": "Bearer ",
    "garbage token": "Bearer not-a-jwt",
    "three garbage parts": "Bearer a.b.c",
    "wrong secret": "Bearer " + make_token("SUB", secret="another-secret-of-sufficient-length-123"),
    "expired": "Bearer " + make_token("SUB", ttl=-120),
    "nbf in the future": "Bearer " + make_token("SUB", nbf=NOW + 3600),
    "no exp": "Bearer " + jwt.encode({"sub": "SUB"}, SECRET, algorithm="HS256"),
    "no sub": "Bearer " + make_token(None),
    "empty sub": "Bearer " + make_token(""),
    "numeric sub": "Bearer " + make_token(12345),
    "list sub": "Bearer " + make_token(["SUB"]),
    "alg none": "Bearer " + _unsigned({"sub": "SUB", "exp": NOW + 600}),
    "alg None": "Bearer " + _unsigned({"sub": "SUB", "exp": NOW + 600}, alg="None"),
    "RS256 token against the HS secret": "Bearer "
    + jwt.encode({"sub": "SUB", "exp": NOW + 600}, _rsa_pem(), algorithm="RS256"),
    "tampered payload": "Bearer "
    + ".".join(
        [
            make_token("SUB").split(".")[0],
            _b64(json.dumps({"sub": "SUB", "exp": NOW + 9999}).encode()),
            make_token("SUB").split(".")[2],
        ]
    ),
}


@pytest.mark.parametrize("header", list(CASES.values()), ids=list(CASES))
async def test_each_invalid_credential_is_401_with_www_authenticate(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    await _assert_401(client, "/api/SUB/tasks", headers)


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, user_id: str) -> None:
    token = make_token(user_id)
    for scheme in ("bearer", "BEARER", "BeArEr"):
        response = await client.get(
            f"/api/{user_id}/tasks", headers={"Authorization": f"{scheme} {token}"}
        )
        assert response.status_code == 200, scheme


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_hmac_algorithms_with_the_shared_secret_are_accepted(
    client: httpx.AsyncClient, user_id: str, algorithm: str
) -> None:
    response = await client.get(f"/api/{user_id}/tasks", headers=auth(user_id, algorithm=algorithm))
    assert response.status_code == 200


async def test_small_clock_skew_is_tolerated(client: httpx.AsyncClient, user_id: str) -> None:
    # Expired 10 s ago, within the default 30 s leeway.
    response = await client.get(f"/api/{user_id}/tasks", headers=auth(user_id, ttl=-10))
    assert response.status_code == 200


async def test_token_in_query_string_or_cookie_is_ignored(
    client: httpx.AsyncClient, user_id: str
) -> None:
    token = make_token(user_id)
    by_query = await client.get(f"/api/{user_id}/tasks", params={"token": token})
    assert by_query.status_code == 401
    by_cookie = await client.get(
        f"/api/{user_id}/tasks", headers={"Cookie": f"token={token}; access_token={token}"}
    )
    assert by_cookie.status_code == 401


async def test_other_users_path_is_403_on_every_endpoint(
    client: httpx.AsyncClient, user_id: str
) -> None:
    other = user_id + "-other"
    h = auth(user_id)
    calls = [
        ("GET", f"/api/{other}/tasks", None),
        ("POST", f"/api/{other}/tasks", {"title": "x"}),
        ("GET", f"/api/{other}/tasks/1", None),
        ("PUT", f"/api/{other}/tasks/1", {"title": "x"}),
        ("PATCH", f"/api/{other}/tasks/1/complete", None),
        ("DELETE", f"/api/{other}/tasks/1", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, headers=h, json=body)
        assert response.status_code == 403, (method, path)
        assert response.json() == {
            "status_code": 403,
            "detail": "Not allowed to access another user's tasks",
        }


async def test_path_user_must_equal_sub_exactly(client: httpx.AsyncClient, user_id: str) -> None:
    h = auth(user_id)
    for variant in (user_id.upper(), user_id + " ", " " + user_id, user_id[:-1]):
        response = await client.get(f"/api/{variant}/tasks", headers=h)
        assert response.status_code == 403, variant


async def test_401_comes_before_403_and_before_body_and_query_validation(
    client: httpx.AsyncClient, user_id: str
) -> None:
    # No token, someone else's path, a bad body and a bad query: the 401 wins.
    response = await client.post(
        "/api/someone-else/tasks?status=bogus",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    # Valid token for another user with a bad body: 403 wins over 400/422.
    response = await client.post(
        "/api/someone-else/tasks",
        content=b"{not json",
        headers={**auth(user_id), "Content-Type": "application/json"},
    )
    assert response.status_code == 403
    response = await client.get("/api/someone-else/tasks?limit=0", headers=auth(user_id))
    assert response.status_code == 403
    # 403 before 404 for a task id that cannot exist.
    response = await client.get("/api/someone-else/tasks/abc", headers=auth(user_id))
    assert response.status_code == 403


async def test_sub_with_control_characters_or_too_long_is_401(client: httpx.AsyncClient) -> None:
    for sub in ("a\x00b", "tab\there", "x" * 256):
        token = make_token(sub)
        response = await client.get("/api/x/tasks", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, repr(sub)


async def test_first_write_creates_the_user_row_with_name_and_email(
    client: httpx.AsyncClient, user_id: str, database_url: str
) -> None:
    import psycopg

    headers = auth(user_id, name="Ada Lovelace", email="ada@example.com")
    response = await client.post(f"/api/{user_id}/tasks", json={"title": "t"}, headers=headers)
    assert response.status_code == 201
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT id, name, email FROM users WHERE id = %s", (user_id,))
        assert await cur.fetchone() == (user_id, "Ada Lovelace", "ada@example.com")


# Found by the red team.
async def test_two_authorization_headers_are_401(client: httpx.AsyncClient, user_id: str) -> None:
    """RFC 9110 §11.6.2: one Authorization field; a valid first and a bad second (or the
    reverse) must not pass, whichever one a proxy in front looked at."""
    good = f"Bearer {make_token(user_id)}"
    for pair in ((good, "Bearer bad"), ("Bearer bad", good), (good, good)):
        response = await client.get(
            f"/api/{user_id}/tasks",
            headers=[("Authorization", pair[0]), ("Authorization", pair[1])],
        )
        assert response.status_code == 401, pair
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_a_time_claim_that_is_not_a_json_number_is_401(
    client: httpx.AsyncClient, user_id: str, claim: str
) -> None:
    """RFC 7519 §2 NumericDate is a JSON number; PyJWT alone accepts "1796036570"."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "iat": now,
        "exp": now + 600,
        claim: str(now + (600 if claim == "exp" else -5)),
    }
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    response = await client.get(
        f"/api/{user_id}/tasks", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text
