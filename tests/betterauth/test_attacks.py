"""Attacks on JWKS verification, each against real Better Auth keys: every one must fail (401)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.betterauth.harness import BetterAuth, api, bearer, better_auth
from tests.betterauth.test_betterauth_tokens import wait_for_warm_fetch
from tests.support import SECRET, free_port, make_token, running_service


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes, digest: Any) -> str:
    """An HMAC-signed JWT made by hand: PyJWT won't HMAC with a public key, an attacker will."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_for(server: BetterAuth, sub: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "iss": server.base_url,
        "aud": server.base_url,
    }


def public_key_encodings(jwk: dict[str, Any]) -> list[bytes]:
    """The public key as an attacker would feed it to HMAC: PEM, DER, raw, and the JWK itself."""
    key = jwt.PyJWK(jwk).key
    encodings = [
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(jwk).encode(),
    ]
    if jwk["kty"] == "OKP":
        encodings.append(base64.urlsafe_b64decode(jwk["x"] + "=="))
    if jwk["kty"] == "RSA":
        encodings.append(
            key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        )
    return encodings


@pytest.fixture(scope="module", params=["EdDSA", "RS256"])
def server(request: pytest.FixtureRequest) -> Iterator[BetterAuth]:
    with better_auth(request.param) as s:
        yield s


async def test_alg_none_with_a_real_kid_is_401(server: BetterAuth, database_url: str) -> None:
    user = server.sign_up()
    real = server.token(user)
    kid = jwt.get_unverified_header(real)["kid"]
    header_b64, payload_b64, _ = real.split(".")
    async with api(database_url, better_auth_url=server.base_url) as (client, _app):
        path = f"/api/{user.id}/tasks"
        assert (await client.get(path, headers=bearer(real))).status_code == 200
        for alg in ("none", "None", "NONE", "nOnE", ""):
            none_header = b64(json.dumps({"alg": alg, "kid": kid}).encode())
            for token in (f"{none_header}.{payload_b64}.", f"{none_header}.{payload_b64}"):
                response = await client.get(path, headers=bearer(token))
                assert response.status_code == 401, (alg, response.text)
        # The real header and payload with the signature stripped.
        stripped = await client.get(path, headers=bearer(f"{header_b64}.{payload_b64}."))
        assert stripped.status_code == 401


@pytest.mark.parametrize("with_secret", [True, False], ids=["secret-configured", "jwks-only"])
async def test_hs256_signed_with_the_public_key_is_401(
    server: BetterAuth, database_url: str, with_secret: bool
) -> None:
    """Algorithm confusion: HMAC keyed with the published public key must never verify."""
    user = server.sign_up()
    jwk = server.jwks()["keys"][0]
    claims = claims_for(server, user.id)
    forged = [
        forge({"alg": alg, "typ": "JWT", **kid}, claims, key, digest)
        for key in public_key_encodings(jwk)
        for alg, digest in (
            ("HS256", hashlib.sha256),
            ("HS384", hashlib.sha384),
            ("HS512", hashlib.sha512),
        )
        for kid in ({"kid": jwk["kid"]}, {})
    ]
    overrides: dict[str, Any] = {"better_auth_url": server.base_url}
    if not with_secret:
        overrides["better_auth_secret"] = None
    async with api(database_url, **overrides) as (client, _app):
        path = f"/api/{user.id}/tasks"
        assert (await client.get(path, headers=bearer(server.token(user)))).status_code == 200
        for token in forged:
            response = await client.get(path, headers=bearer(token))
            assert response.status_code == 401, response.text
        if with_secret:
            # The same forgery with the real secret passes: the key is what was refused above.
            genuine = forge({"alg": "HS256", "typ": "JWT"}, claims, SECRET.encode(), hashlib.sha256)
            assert (await client.get(path, headers=bearer(genuine))).status_code == 200


async def test_a_flood_of_unknown_kids_costs_a_bounded_number_of_jwks_fetches(
    database_url: str,
) -> None:
    with better_auth("EdDSA") as server:
        user = server.sign_up()
        real = server.token(user)
        attacker = Ed25519PrivateKey.generate()
        claims = claims_for(server, user.id)
        async with api(
            database_url, better_auth_url=server.base_url, jwks_min_refresh_seconds=5.0
        ) as (client, app):
            await wait_for_warm_fetch(app)
            path = f"/api/{user.id}/tasks"
            assert (await client.get(path, headers=bearer(real))).status_code == 200
            cache_before, served_before = app.state.verifier.jwks.fetches, server.jwks_requests()

            started = time.monotonic()
            for _ in range(5):
                tokens = [
                    jwt.encode(
                        claims, attacker, algorithm="EdDSA", headers={"kid": secrets.token_hex(8)}
                    )
                    for _ in range(60)
                ]
                responses = await asyncio.gather(
                    *(client.get(path, headers=bearer(t)) for t in tokens)
                )
                assert {r.status_code for r in responses} == {401}
            elapsed = time.monotonic() - started

            # 300 unknown kids: at most one fetch per 5 s interval (plus one for a boundary).
            allowed = int(elapsed / 5.0) + 1
            assert app.state.verifier.jwks.fetches - cache_before <= allowed
            assert server.jwks_requests() - served_before <= allowed
            # Real tokens keep working from the cache throughout.
            assert (await client.get(path, headers=bearer(real))).status_code == 200


async def test_an_attackers_key_under_the_real_kid_is_401(
    eddsa: BetterAuth, database_url: str
) -> None:
    user = eddsa.sign_up()
    kid = jwt.get_unverified_header(eddsa.token(user))["kid"]
    forged = jwt.encode(
        claims_for(eddsa, user.id),
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    async with api(database_url, better_auth_url=eddsa.base_url) as (client, _app):
        response = await client.get(f"/api/{user.id}/tasks", headers=bearer(forged))
        assert response.status_code == 401


async def test_wrong_issuer_or_audience_is_401_when_configured(
    eddsa: BetterAuth, database_url: str
) -> None:
    server = eddsa
    user = server.sign_up()
    real = server.token(user)
    now = int(time.time())
    base = {"sub": user.id, "iat": now, "exp": now + 600}
    wrong_iss = server.sign({**base, "iss": "http://evil.example", "aud": server.base_url})
    wrong_aud = server.sign({**base, "iss": server.base_url, "aud": "http://other-api.example"})
    path = f"/api/{user.id}/tasks"
    async with api(
        database_url,
        better_auth_url=server.base_url,
        jwt_issuer=server.base_url,
        jwt_audience=server.base_url,
    ) as (client, _app):
        assert (await client.get(path, headers=bearer(real))).status_code == 200
        assert (await client.get(path, headers=bearer(wrong_iss))).status_code == 401
        assert (await client.get(path, headers=bearer(wrong_aud))).status_code == 401
    # An API that expects another audience refuses a genuine token meant for this origin.
    async with api(
        database_url, better_auth_url=server.base_url, jwt_audience="https://tasks-api.example"
    ) as (client, _app):
        assert (await client.get(path, headers=bearer(real))).status_code == 401
    # Without JWT_ISSUER/JWT_AUDIENCE they are not checked: the contract's default.
    async with api(database_url, better_auth_url=server.base_url) as (client, _app):
        assert (await client.get(path, headers=bearer(wrong_iss))).status_code == 200


async def test_malformed_headers_are_401_never_500(eddsa: BetterAuth, database_url: str) -> None:
    user = eddsa.sign_up()
    _, payload_b64, signature = eddsa.token(user).split(".")
    async with api(database_url, better_auth_url=eddsa.base_url) as (client, _app):
        for header in (
            {"alg": ["EdDSA"]},
            {"alg": {"EdDSA": 1}},
            {"alg": None},
            {"alg": "EdDSA", "kid": ["x"]},
            {"alg": "EdDSA", "kid": 7},
            {"alg": "EdDSA"},
            {"alg": "EdDSA", "kid": ""},
        ):
            token = f"{b64(json.dumps(header).encode())}.{payload_b64}.{signature}"
            response = await client.get(f"/api/{user.id}/tasks", headers=bearer(token))
            assert response.status_code == 401, (header, response.status_code, response.text)


def test_jwks_unreachable_is_401_the_service_stays_up_and_logs_why(
    eddsa: BetterAuth, database_url: str, tmp_path: Path
) -> None:
    """A real server whose JWKS URL answers nothing: Better Auth tokens get 401, HS256 works."""
    user = eddsa.sign_up()
    real = eddsa.token(user)
    dead_jwks = f"http://127.0.0.1:{free_port()}/api/auth/jwks"  # nothing listens there
    log = tmp_path / "api.log"
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_JWKS_URL": dead_jwks,
        "JWKS_MIN_REFRESH_SECONDS": "0.5",
        "DB_POOL_MIN": "1",
    }
    with running_service(env, log_path=log) as (base, proc):
        path = f"{base}/api/{user.id}/tasks"
        for _ in range(3):
            response = httpx.get(path, headers=bearer(real), timeout=10)
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            time.sleep(0.6)
        assert httpx.get(base + "/health", timeout=5).status_code == 200
        hs = httpx.get(path, headers=bearer(make_token(user.id)), timeout=10)
        assert hs.status_code == 200
        assert proc.poll() is None
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    failures = [e for e in events if e.get("event") == "jwks_fetch_failed"]
    assert failures, log.read_text()[-3000:]
    assert all(e["url"] == dead_jwks and "Connect" in e["error"] for e in failures)


async def test_a_slow_jwks_fetch_never_blocks_other_requests(database_url: str) -> None:
    """While a fetch hangs on a slow JWKS, tokens that need no fetch are answered at once."""
    with better_auth("EdDSA") as server:
        user = server.sign_up()
        real = server.token(user)
        async with api(
            database_url, better_auth_url=server.base_url, jwks_min_refresh_seconds=0.0
        ) as (client, app):
            await wait_for_warm_fetch(app)
            path = f"/api/{user.id}/tasks"
            server.delay_jwks(2000)
            unknown = jwt.encode(
                claims_for(server, user.id),
                Ed25519PrivateKey.generate(),
                algorithm="EdDSA",
                headers={"kid": "not-yet-published"},
            )
            started = time.monotonic()
            waiting = asyncio.create_task(client.get(path, headers=bearer(unknown)))
            while not app.state.verifier.jwks.refreshing:  # the fetch is in flight
                assert time.monotonic() - started < 5, "no fetch seen in flight: a blocking fetch?"
                await asyncio.sleep(0.01)
            quick = time.monotonic()
            hs256 = await client.get(path, headers=bearer(make_token(user.id)))
            known = await client.get(path, headers=bearer(real))
            quick = time.monotonic() - quick
            assert hs256.status_code == 200 and known.status_code == 200
            assert not waiting.done(), "the slow fetch should still be in flight"
            assert quick < 1.5, f"requests waited {quick:.2f}s behind the JWKS fetch"
            assert (await waiting).status_code == 401
            assert time.monotonic() - started >= 1.9


class JWKSHandler(BaseHTTPRequestHandler):
    document: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def plain_jwks() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS as other issuers publish it (keys without `alg`), and an odd key among them."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    broken = {"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "broken"}
    document = {"keys": [{**ec_jwk, "kid": "ec"}, broken]}
    handler = type("Handler", (JWKSHandler,), {"document": document})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks", {"ec": ec_key}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_a_kid_whose_key_does_not_fit_the_alg_is_401_never_500(
    plain_jwks: tuple[str, dict[str, Any]], database_url: str
) -> None:
    url, private = plain_jwks
    now = int(time.time())
    claims = {"sub": "someone", "iat": now, "exp": now + 600}
    async with api(database_url, better_auth_jwks_url=url) as (client, app):
        await wait_for_warm_fetch(app)
        good = jwt.encode(claims, private["ec"], algorithm="ES256", headers={"kid": "ec"})
        assert (await client.get("/api/someone/tasks", headers=bearer(good))).status_code == 200
        attacker = Ed25519PrivateKey.generate()
        for alg, kid, key in (
            ("EdDSA", "ec", attacker),  # the EC key, asked to verify EdDSA
            ("ES512", "ec", ec.generate_private_key(ec.SECP521R1())),  # wrong curve
            ("RS256", "ec", _rsa_key()),
            ("EdDSA", "broken", attacker),  # a malformed key in the JWKS
        ):
            token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
            response = await client.get("/api/someone/tasks", headers=bearer(token))
            assert response.status_code == 401, (alg, kid, response.status_code, response.text)


def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
