"""Real Better Auth (jwt plugin) tokens against the API: every endpoint, 403, expiry, rotation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import jwt
import psycopg
import pytest
from fastapi import FastAPI

from tests.betterauth.harness import (
    HERE,
    BetterAuth,
    api,
    bearer,
    better_auth,
    require_node_harness,
)
from tests.support import SECRET


async def wait_for_warm_fetch(app: FastAPI, timeout: float = 5.0) -> None:
    """The lifespan starts a JWKS fetch in the background; wait for it to be done."""
    jwks = app.state.verifier.jwks
    deadline = time.monotonic() + timeout
    while jwks.fetches < 1 or jwks.refreshing:
        assert time.monotonic() < deadline, "the JWKS warm-up fetch never ran"
        await asyncio.sleep(0.02)


async def exercise_every_endpoint(client: httpx.AsyncClient, user_id: str, token: str) -> None:
    h = bearer(token)
    base = f"/api/{user_id}/tasks"
    empty = await client.get(base, headers=h)
    assert empty.status_code == 200 and empty.json() == []

    created = await client.post(base, json={"title": "  Write tests  "}, headers=h)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["title"] == "Write tests" and task["user_id"] == user_id
    assert task["completed"] is False and task["description"] is None
    assert created.headers["location"] == f"{base}/{task['id']}"
    second = await client.post(base, json={"title": "another", "description": "d"}, headers=h)
    assert second.status_code == 201

    listed = await client.get(base, headers=h, params={"sort": "title"})
    assert listed.status_code == 200
    assert [t["title"] for t in listed.json()] == ["another", "Write tests"]

    got = await client.get(f"{base}/{task['id']}", headers=h)
    assert got.status_code == 200 and got.json() == task

    put = await client.put(f"{base}/{task['id']}", json={"description": "with JWKS"}, headers=h)
    assert put.status_code == 200
    assert put.json()["description"] == "with JWKS" and put.json()["title"] == "Write tests"

    toggled = await client.patch(f"{base}/{task['id']}/complete", headers=h)
    assert toggled.status_code == 200 and toggled.json()["completed"] is True
    set_false = await client.patch(
        f"{base}/{task['id']}/complete", json={"completed": False}, headers=h
    )
    assert set_false.status_code == 200 and set_false.json()["completed"] is False
    await client.patch(f"{base}/{task['id']}/complete", headers=h)

    completed = await client.get(base, headers=h, params={"status": "completed"})
    assert [t["id"] for t in completed.json()] == [task["id"]]
    pending = await client.get(base, headers=h, params={"status": "pending"})
    assert [t["id"] for t in pending.json()] == [second.json()["id"]]

    deleted = await client.delete(f"{base}/{task['id']}", headers=h)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await client.get(f"{base}/{task['id']}", headers=h)
    assert gone.status_code == 404
    again = await client.delete(f"{base}/{task['id']}", headers=h)
    assert again.status_code == 404


@pytest.fixture(scope="module", params=["EdDSA", "ES256", "RS256", "ES512", "PS256"])
def better_auth_any_alg(request: pytest.FixtureRequest) -> Iterator[BetterAuth]:
    with better_auth(request.param) as server:
        yield server


async def test_every_endpoint_with_a_real_better_auth_token(
    better_auth_any_alg: BetterAuth, database_url: str
) -> None:
    server = better_auth_any_alg
    alg = server.alg
    user = server.sign_up(name="Grace Hopper")
    token = server.token(user)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    # What the contract says real Better Auth sends.
    assert header["alg"] == alg and header["kid"] and "typ" not in header
    assert claims["sub"] == user.id and claims["iss"] == server.base_url
    assert claims["aud"] == server.base_url and claims["exp"] - claims["iat"] == 15 * 60
    assert {k["kid"] for k in server.jwks()["keys"]} == {header["kid"]}

    async with api(
        database_url,
        better_auth_secret=None,
        better_auth_url=server.base_url,
        jwt_issuer=server.base_url,
        jwt_audience=server.base_url,
    ) as (client, _app):
        await exercise_every_endpoint(client, user.id, token)
        # The other way a frontend gets it: the set-auth-jwt header of get-session.
        listed = await client.get(f"/api/{user.id}/tasks", headers=bearer(server.session_jwt(user)))
        assert listed.status_code == 200 and len(listed.json()) == 1

    # The first write created the reference row, with name and email from the token.
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT name, email FROM users WHERE id = %s", (user.id,)).fetchone()
    assert row == ("Grace Hopper", user.email)


async def test_a_token_for_another_users_path_is_403(eddsa: BetterAuth, database_url: str) -> None:
    alice, bob = eddsa.sign_up("Alice"), eddsa.sign_up("Bob")
    alice_token, bob_token = eddsa.token(alice), eddsa.token(bob)
    async with api(database_url, better_auth_url=eddsa.base_url) as (client, _app):
        made = await client.post(
            f"/api/{bob.id}/tasks", json={"title": "Bob's"}, headers=bearer(bob_token)
        )
        assert made.status_code == 201
        task_id = made.json()["id"]
        for method, path in [
            ("GET", f"/api/{bob.id}/tasks"),
            ("POST", f"/api/{bob.id}/tasks"),
            ("GET", f"/api/{bob.id}/tasks/{task_id}"),
            ("PUT", f"/api/{bob.id}/tasks/{task_id}"),
            ("PATCH", f"/api/{bob.id}/tasks/{task_id}/complete"),
            ("DELETE", f"/api/{bob.id}/tasks/{task_id}"),
        ]:
            body = {"title": "stolen"} if method in ("POST", "PUT") else None
            response = await client.request(method, path, json=body, headers=bearer(alice_token))
            assert response.status_code == 403, (method, path, response.text)
        # Alice's own path does not show Bob's task, and Bob's task is untouched.
        mine = await client.get(f"/api/{alice.id}/tasks", headers=bearer(alice_token))
        assert mine.status_code == 200 and mine.json() == []
        still = await client.get(f"/api/{bob.id}/tasks/{task_id}", headers=bearer(bob_token))
        assert still.json()["title"] == "Bob's" and still.json()["completed"] is False


async def test_an_expired_token_of_the_same_key_is_401(database_url: str) -> None:
    # Better Auth configured with a short expirationTime; no leeway on the API side.
    with better_auth("EdDSA", BA_EXPIRATION="3s") as server:
        user = server.sign_up()
        async with api(database_url, better_auth_url=server.base_url, jwt_leeway_seconds=0) as (
            client,
            _app,
        ):
            # Fetched only now that the API is up, so that it is still fresh on a busy machine.
            token = server.token(user)
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["exp"] - claims["iat"] == 3
            fresh = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
            assert fresh.status_code == 200, fresh.text
            await asyncio.sleep(max(0.0, claims["exp"] + 1.1 - time.time()))
            expired = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
            assert expired.status_code == 401
            assert expired.json()["detail"] == "Token expired"
            assert expired.headers["www-authenticate"] == "Bearer"
            # A new token from the same key (same kid) works again.
            renewed = server.token(user)
            assert (
                jwt.get_unverified_header(renewed)["kid"] == jwt.get_unverified_header(token)["kid"]
            )
            ok = await client.get(f"/api/{user.id}/tasks", headers=bearer(renewed))
            assert ok.status_code == 200


async def test_a_token_better_auth_signed_already_expired_is_401(
    eddsa: BetterAuth, database_url: str
) -> None:
    user = eddsa.sign_up()
    now = int(time.time())
    old = eddsa.sign({"sub": user.id, "iat": now - 3600, "exp": now - 600})
    assert (
        jwt.get_unverified_header(old)["kid"] == jwt.get_unverified_header(eddsa.token(user))["kid"]
    )
    async with api(database_url, better_auth_url=eddsa.base_url) as (client, _app):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(old))
        assert response.status_code == 401 and response.json()["detail"] == "Token expired"


async def test_key_rotation_is_picked_up_without_restart(database_url: str) -> None:
    with better_auth("EdDSA") as server:
        user = server.sign_up()
        old_token = server.token(user)
        old_kid = jwt.get_unverified_header(old_token)["kid"]
        async with api(
            database_url, better_auth_url=server.base_url, jwks_min_refresh_seconds=1.0
        ) as (client, app):
            await wait_for_warm_fetch(app)
            path = f"/api/{user.id}/tasks"
            assert (await client.get(path, headers=bearer(old_token))).status_code == 200
            fetches = app.state.verifier.jwks.fetches

            server.rotate()
            new_token = server.token(user)
            new_kid = jwt.get_unverified_header(new_token)["kid"]
            assert new_kid != old_kid
            assert {k["kid"] for k in server.jwks()["keys"]} == {old_kid, new_kid}

            await asyncio.sleep(1.1)  # past the refetch interval since the warm-up
            response = await client.get(path, headers=bearer(new_token))
            assert response.status_code == 200, response.text
            assert app.state.verifier.jwks.fetches == fetches + 1
            # The rotated-out key is still published (grace period): its tokens still verify,
            # and from the cache, without another fetch.
            assert (await client.get(path, headers=bearer(old_token))).status_code == 200
            assert (await client.get(path, headers=bearer(new_token))).status_code == 200
            assert app.state.verifier.jwks.fetches == fetches + 1


async def test_an_hs256_token_signed_by_jose_as_a_nextjs_route_would(
    eddsa: BetterAuth, database_url: str
) -> None:
    """Way 2 of the README: `jose` signs HS256 with BETTER_AUTH_SECRET, beside the JWKS way."""
    user = eddsa.sign_up()
    signed = subprocess.run(
        [require_node_harness(), "sign-hs256.mjs", user.id, user.name, user.email],
        cwd=HERE,
        env={**os.environ, "BETTER_AUTH_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token = signed.stdout.strip()
    assert jwt.get_unverified_header(token) == {"alg": "HS256"}
    # Both ways configured at once, as the README suggests is safe.
    async with api(database_url, better_auth_url=eddsa.base_url) as (client, _app):
        await exercise_every_endpoint(client, user.id, token)
        jwks_token = await client.get(f"/api/{user.id}/tasks", headers=bearer(eddsa.token(user)))
        assert jwks_token.status_code == 200 and len(jwks_token.json()) == 1


async def test_a_key_removed_from_the_jwks_stops_verifying_without_restart(
    database_url: str,
) -> None:
    with better_auth("EdDSA") as server:
        user = server.sign_up()
        old_token = server.token(user)
        async with api(
            database_url, better_auth_url=server.base_url, jwks_min_refresh_seconds=0.2
        ) as (client, app):
            await wait_for_warm_fetch(app)
            jwks = app.state.verifier.jwks
            jwks.max_age = 0.5  # no setting for it: 5 minutes in production
            path = f"/api/{user.id}/tasks"
            assert (await client.get(path, headers=bearer(old_token))).status_code == 200

            server.revoke()
            new_token = server.token(user)
            await asyncio.sleep(0.6)
            # The cache is stale: this request is still served from it (never held up by a
            # fetch) and starts a re-read in the background.
            fetches = jwks.fetches
            assert (await client.get(path, headers=bearer(old_token))).status_code == 200
            deadline = time.monotonic() + 5
            while jwks.fetches == fetches or jwks.refreshing:
                assert time.monotonic() < deadline, "no background JWKS refresh"
                await asyncio.sleep(0.02)
            revoked = await client.get(path, headers=bearer(old_token))
            assert revoked.status_code == 401, revoked.text
            assert (await client.get(path, headers=bearer(new_token))).status_code == 200


async def test_a_jwks_and_tokens_without_kid_from_real_better_auth(database_url: str) -> None:
    """Issue 11.8, contract "A token without `kid` is verified when exactly one JWKS key fits
    its `alg`": Better Auth with keys stored without id publishes them and signs without `kid`."""
    with better_auth("EdDSA") as server:
        user = server.sign_up()
        server.token(user)  # Better Auth creates its first key pair on first use
        server.drop_kids()
        kidless = server.token(user)
        assert "kid" not in jwt.get_unverified_header(kidless)
        assert ["kid" in k for k in server.jwks()["keys"]] == [False]
        path = f"/api/{user.id}/tasks"
        async with api(
            database_url, better_auth_url=server.base_url, jwks_min_refresh_seconds=0.0
        ) as (client, app):
            await wait_for_warm_fetch(app)
            assert (await client.get(path, headers=bearer(kidless))).status_code == 200
            # A second key, also without kid: the token no longer names one key. 401.
            server.rotate()
            server.token(user)  # signed by a new key pair
            server.drop_kids()
            published = [("kid" in k, k["kty"]) for k in server.jwks()["keys"]]
            assert published == [(False, "OKP"), (False, "OKP")]
            await app.state.verifier.jwks.refresh(force=True)
            response = await client.get(path, headers=bearer(kidless))
            assert response.status_code == 401, response.text
