"""The JWKS as an outside call: one overall deadline, a bounded body, single flight, keys
without `kid`, and the RFC 7518 §3.2 key lengths of HS384/HS512.

The JWKS is a stub served by the test itself on loopback (a real HTTP server in a thread),
so that it can misbehave on purpose: drip its body one byte at a time, or send too much.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from api.auth import AuthError, TokenVerifier
from tests.betterauth.harness import api, bearer

FETCH_TIMEOUT = 1.0  # JWKS_FETCH_TIMEOUT of the service under test, seconds
DRIP_INTERVAL = 0.5  # below httpx's per-read timeout (FETCH_TIMEOUT): only a total deadline helps
DRIP_LIMIT = 20.0  # the stub stops dripping after this long, so a failing test still ends


@dataclass
class StubState:
    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    mode: str = "serve"  # serve | drip | big-with-length | big-chunked
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


class StubHandler(BaseHTTPRequestHandler):
    state: StubState

    def do_GET(self) -> None:
        state = self.state
        state.requests += 1
        body = json.dumps(state.document).encode()
        if state.mode.startswith("big"):
            # A valid JWKS holding the right key, padded past the cache's 64 KiB bound.
            body = json.dumps({**state.document, "padding": "x" * 1024 * 1024}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if state.mode != "big-chunked":  # HTTP/1.0 without a length: the body ends at close
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if state.mode == "drip":
                ends = time.monotonic() + DRIP_LIMIT
                for byte in body:
                    if state.stop.is_set() or time.monotonic() > ends:
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(DRIP_INTERVAL)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, StubState]]:
    state = StubState()
    handler = type("Handler", (StubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/auth/jwks", state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def public_jwk(private: Any, **extra: Any) -> dict[str, Any]:
    if isinstance(private, Ed25519PrivateKey):
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    return {**jwk, **extra}


def token(private: Any, algorithm: str, sub: str, kid: str | None) -> str:
    now = int(time.time())
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600}, private, algorithm, headers)


async def wait_for_fetch(app: FastAPI, fetches: int = 1) -> None:
    jwks = app.state.verifier.jwks
    deadline = time.monotonic() + 5
    while jwks.fetches < fetches or jwks.refreshing:
        assert time.monotonic() < deadline, "the JWKS fetch never finished"
        await asyncio.sleep(0.02)


# --- one overall deadline, single flight, known keys never delayed ---------------------------


async def test_a_drip_feeding_jwks_gives_401_within_the_deadline_and_known_kids_stay_fast(
    stub: tuple[str, StubState], database_url: str
) -> None:
    """The seen case: 200, then one byte at a time. httpx's timeouts apply per read and never
    fire; the fetch's own deadline must. Meanwhile cached keys keep answering at once, and all
    concurrent refreshes share one fetch whose waiters are bounded by the same deadline."""
    url, state = stub
    known_key = Ed25519PrivateKey.generate()
    state.document = {"keys": [public_jwk(known_key, kid="known")]}
    async with api(
        database_url,
        better_auth_jwks_url=url,
        jwks_fetch_timeout=FETCH_TIMEOUT,
        jwks_min_refresh_seconds=0.0,
    ) as (client, app):
        await wait_for_fetch(app)
        path = "/api/dripper/tasks"
        known = bearer(token(known_key, "EdDSA", "dripper", "known"))
        assert (await client.get(path, headers=known)).status_code == 200

        state.mode = "drip"
        served_before = state.requests
        attacker = Ed25519PrivateKey.generate()
        t0 = time.monotonic()

        async def unknown(kid: str) -> tuple[int, float]:
            response = await client.get(
                path, headers=bearer(token(attacker, "EdDSA", "dripper", kid))
            )
            return response.status_code, time.monotonic() - t0

        early = [asyncio.create_task(unknown(f"new-{i}")) for i in range(10)]
        await asyncio.sleep(0.05)
        assert app.state.verifier.jwks.refreshing, "no fetch in flight"
        # Tokens with a cached key are answered while the fetch drips.
        for _ in range(5):
            started = time.monotonic()
            response = await client.get(path, headers=known)
            assert response.status_code == 200
            assert time.monotonic() - started < 0.5, "a known kid waited for the refresh"
        await asyncio.sleep(max(0.0, t0 + 0.5 - time.monotonic()))
        late = asyncio.create_task(unknown("new-late"))  # joins the fetch in flight
        results = await asyncio.gather(*early, late)

        slack = 0.6  # a shared 2-core machine; the drip itself would last > 60 s
        assert all(status == 401 for status, _ in results), results
        assert max(elapsed for _, elapsed in results) < FETCH_TIMEOUT + slack, results
        # The late joiner waited for the same deadline, not a fresh one of its own.
        assert results[-1][1] < FETCH_TIMEOUT + slack, results[-1]
        assert state.requests - served_before == 1, "concurrent refreshes did not share a fetch"
        assert not app.state.verifier.jwks.refreshing
        # The keys it had are kept.
        assert (await client.get(path, headers=known)).status_code == 200


@pytest.mark.parametrize("mode", ["big-with-length", "big-chunked"])
async def test_a_jwks_larger_than_64_kib_is_refused(
    stub: tuple[str, StubState], database_url: str, mode: str
) -> None:
    url, state = stub
    key = Ed25519PrivateKey.generate()
    state.document = {"keys": [public_jwk(key, kid="padded")]}
    state.mode = mode
    async with api(database_url, better_auth_jwks_url=url, jwks_fetch_timeout=5.0) as (
        client,
        app,
    ):
        await wait_for_fetch(app)
        headers = bearer(token(key, "EdDSA", "big", "padded"))
        assert (await client.get("/api/big/tasks", headers=headers)).status_code == 401
        # The same document without the padding: the key itself was fine.
        state.mode = "serve"
        await app.state.verifier.jwks.refresh(force=True)
        assert (await client.get("/api/big/tasks", headers=headers)).status_code == 200


# --- tokens without `kid` ---------------------------------------------------------------------


async def test_a_token_without_kid_uses_the_one_key_that_fits_its_alg(
    stub: tuple[str, StubState], database_url: str
) -> None:
    """Issue 11.8: a JWKS of one Ed25519 key without `kid`, an EdDSA token without `kid`."""
    url, state = stub
    ed = Ed25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    state.document = {"keys": [public_jwk(ed)]}
    async with api(database_url, better_auth_jwks_url=url, better_auth_secret=None) as (
        client,
        app,
    ):
        await wait_for_fetch(app)
        jwks = app.state.verifier.jwks

        async def status(private: Any, algorithm: str, kid: str | None = None) -> int:
            headers = bearer(token(private, algorithm, "kidless", kid))
            return (await client.get("/api/kidless/tasks", headers=headers)).status_code

        assert await status(ed, "EdDSA") == 200
        assert await status(Ed25519PrivateKey.generate(), "EdDSA") == 401  # fits, wrong key
        assert await status(p256, "ES256") == 401  # no key fits ES256

        # One key of each type, neither with `kid`: each alg has exactly one fitting key.
        # An encryption key and a key reserved for another alg do not count.
        state.document = {
            "keys": [
                public_jwk(ed),
                public_jwk(p256),
                public_jwk(Ed25519PrivateKey.generate(), use="enc"),
                public_jwk(Ed25519PrivateKey.generate(), alg="ES256"),
            ]
        }
        await jwks.refresh(force=True)
        assert await status(ed, "EdDSA") == 200
        assert await status(p256, "ES256") == 200
        p521 = ec.generate_private_key(ec.SECP521R1())
        assert await status(p521, "ES512") == 401  # the P-256 key does not fit ES512

        # A key with `kid` counts too when the token names none.
        state.document = {"keys": [public_jwk(ed, kid="only")]}
        await jwks.refresh(force=True)
        assert await status(ed, "EdDSA") == 200


async def test_a_token_without_kid_and_two_fitting_keys_is_401(
    stub: tuple[str, StubState], database_url: str
) -> None:
    url, state = stub
    ed = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    state.document = {"keys": [public_jwk(ed), public_jwk(other, kid="other")]}
    async with api(database_url, better_auth_jwks_url=url, better_auth_secret=None) as (
        client,
        app,
    ):
        await wait_for_fetch(app)
        fetches = app.state.verifier.jwks.fetches
        for private in (ed, other):
            headers = bearer(token(private, "EdDSA", "two", None))
            assert (await client.get("/api/two/tasks", headers=headers)).status_code == 401
        # Ambiguity is no reason to refetch.
        assert app.state.verifier.jwks.fetches == fetches
        # Naming the key by `kid` still works.
        headers = bearer(token(other, "EdDSA", "two", "other"))
        assert (await client.get("/api/two/tasks", headers=headers)).status_code == 200


async def test_hostile_jwks_members_are_401_never_500(
    stub: tuple[str, StubState], database_url: str
) -> None:
    """Whatever JSON a JWKS holds, a token is 401 or verified by the one good key."""
    url, state = stub
    good = Ed25519PrivateKey.generate()
    hostile: list[Any] = [
        "not an object",
        {"kty": "OKP", "crv": ["Ed25519"], "x": "abc"},
        {"kty": ["OKP"], "crv": "Ed25519", "x": "abc"},
        {"kty": "OKP", "crv": "Ed25519", "x": 5, "kid": 7},
        {"kty": "OKP", "crv": "Ed25519", "x": None, "kid": "x-none"},
        {"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "broken"},
        {"kty": "RSA", "n": 5, "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": 1, "y": 2},
        {"kty": "OKP", "crv": "Ed25519", "x": "abc", "alg": ["EdDSA"]},
        {"kty": "OKP", "crv": "Ed25519", "x": "abc", "key_ops": "verify"},
        {"kty": "OKP", "crv": "Ed25519", "x": "abc", "use": ["sig"]},
    ]
    state.document = {"keys": [*hostile, public_jwk(good, kid="good")]}
    async with api(database_url, better_auth_jwks_url=url, better_auth_secret=None) as (
        client,
        app,
    ):
        await wait_for_fetch(app)
        attacker = Ed25519PrivateKey.generate()
        for private, kid, expected in (
            (good, "good", 200),
            (good, None, 200),  # the malformed Ed25519 keys do not count as fitting
            (attacker, None, 401),
            (attacker, "7", 401),
            (attacker, "x-none", 401),
            (attacker, "broken", 401),
        ):
            headers = bearer(token(private, "EdDSA", "hostile", kid))
            response = await client.get("/api/hostile/tasks", headers=headers)
            assert response.status_code == expected, (kid, response.status_code, response.text)
        for algorithm, private in (
            ("ES256", ec.generate_private_key(ec.SECP256R1())),
            ("ES512", ec.generate_private_key(ec.SECP521R1())),
        ):
            headers = bearer(token(private, algorithm, "hostile", None))
            assert (await client.get("/api/hostile/tasks", headers=headers)).status_code == 401


# --- RFC 7518 §3.2: the secret must be as long as the hash output --------------------------


# PyJWT warns when it signs with a key shorter than the hash: these tests do so on purpose.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("secret_bytes", [32, 48, 64])
@pytest.mark.parametrize(("algorithm", "needed"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
async def test_hs384_and_hs512_need_a_secret_as_long_as_their_hash(
    secret_bytes: int, algorithm: str, needed: int
) -> None:
    secret = "s" * secret_bytes
    verifier = TokenVerifier(secret=secret, jwks=None)
    now = int(time.time())
    signed = jwt.encode({"sub": "u", "exp": now + 60}, secret, algorithm=algorithm)
    if secret_bytes >= needed:
        assert (await verifier.verify(signed)).sub == "u"
    else:
        with pytest.raises(AuthError) as caught:
            await verifier.verify(signed)
        assert caught.value.reason == "secret_too_short_for_alg"


def test_the_verifier_refuses_a_secret_under_32_bytes() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(secret="s" * 31, jwks=None)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_a_32_byte_secret_serves_hs256_and_refuses_hs384_hs512(database_url: str) -> None:
    secret = "k" * 32
    async with api(database_url, better_auth_secret=secret) as (client, _app):
        for algorithm, expected in (("HS256", 200), ("HS384", 401), ("HS512", 401)):
            now = int(time.time())
            signed = jwt.encode({"sub": "short", "exp": now + 60}, secret, algorithm=algorithm)
            response = await client.get("/api/short/tasks", headers=bearer(signed))
            assert response.status_code == expected, (algorithm, response.text)
            if expected == 401:
                assert response.headers["www-authenticate"] == "Bearer"
