"""TokenVerifier's verified-token cache (Envoy's jwt_authn `jwt_cache_config`): a repeated
token is verified once; on every hit the time claims hold exactly as in a full verification
(RFC 7519 §4.1.4-4.1.6, with the same leeway), a JWKS key set that changed sends its tokens
through full verification again, a changed token is another key, and the size is bounded.

No database and no network: the verifier is called directly, the JWKS is an httpx
MockTransport. `decodes` counts PyJWT's `jwt.decode`, i.e. full verifications.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import jwt.api_jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from api.auth import AuthError, JWKSCache, Principal, TokenVerifier
from tests.support import SECRET

LEEWAY = 30  # seconds, the verifier's (and JWT_LEEWAY_SECONDS's default)


class WallClock:
    """The wall clock moved by `offset` seconds: the verifier's `clock`, and PyJWT's too."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    """A clock for both the cache's checks and PyJWT's (`datetime.now` in jwt.api_jwt), so that
    the full verification a dropped entry falls back to sees the same moved time."""
    clock = WallClock()

    class MovedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> MovedDatetime:
            moved = dt.datetime.now(tz) + dt.timedelta(seconds=clock.offset)
            return cls.fromtimestamp(moved.timestamp(), tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", MovedDatetime)  # raises if PyJWT moved it
    return clock


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens passed to `jwt.decode` (each one full verification), in order."""
    calls: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


def hs256(sub: str = "cached-user", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + 900, "name": "Ada", **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, "HS256")


def verifier(**kwargs: Any) -> TokenVerifier:
    return TokenVerifier(secret=SECRET, jwks=None, leeway=LEEWAY, **kwargs)


async def refused(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    return caught.value


# --- hits --------------------------------------------------------------------------------------


async def test_a_repeated_token_is_verified_once_and_gets_the_same_principal(
    decodes: list[str],
) -> None:
    v = verifier()
    token = hs256()
    first = await v.verify(token)
    assert first == Principal(sub="cached-user", name="Ada")
    for _ in range(5):
        # A new str object each time, as parsed from each request's header.
        assert await v.verify("".join(list(token))) is first
    assert decodes == [token]
    assert v.cached == 1


async def test_a_cache_size_of_0_turns_the_cache_off(decodes: list[str]) -> None:
    v = verifier(cache_size=0)
    token = hs256()
    for _ in range(3):
        assert (await v.verify(token)).sub == "cached-user"
    assert len(decodes) == 3 and v.cached == 0


# --- time claims on a hit -----------------------------------------------------------------------


async def test_a_token_that_expires_while_cached_is_refused_as_expired(
    wall_clock: WallClock, decodes: list[str]
) -> None:
    v = verifier(clock=wall_clock)
    token = hs256(exp=int(time.time()) + 60)
    await v.verify(token)
    wall_clock.offset = 60 + LEEWAY - 10  # past `exp`, within the leeway: still served
    await v.verify(token)
    assert len(decodes) == 1, "a token within its leeway was not served from the cache"

    wall_clock.offset = 60 + LEEWAY + 10  # past `exp` + leeway
    error = await refused(v, token)
    assert (error.reason, error.detail) == ("expired", "Token expired")
    assert len(decodes) == 2, "the refusal did not come from a full verification"
    assert v.cached == 0
    # The same refusal a verifier that never saw the token gives.
    fresh = await refused(verifier(clock=wall_clock), token)
    assert (fresh.reason, fresh.detail) == (error.reason, error.detail)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_a_token_not_yet_valid_is_never_served(
    wall_clock: WallClock, decodes: list[str], claim: str
) -> None:
    """`nbf` (or `iat`) 60 s ahead, 30 s of leeway: refused, and refusals are not cached;
    valid 40 s later and then cached; when the wall clock steps back (NTP), the cached entry
    is not served but verified again and refused as before."""
    v = verifier(clock=wall_clock)
    token = hs256(**{claim: int(time.time()) + 60})
    for _ in range(2):
        assert (await refused(v, token)).reason == "not_yet_valid"
    assert len(decodes) == 2 and v.cached == 0

    wall_clock.offset = 40  # now + leeway is 10 s past the claim
    await v.verify(token)
    await v.verify(token)
    assert len(decodes) == 3, "a valid token was not served from the cache"

    wall_clock.offset = 0
    error = await refused(v, token)
    assert (error.reason, error.detail) == ("not_yet_valid", "Invalid token")
    assert len(decodes) == 4 and v.cached == 0


# --- a different token is a different key -------------------------------------------------------


def tampered(token: str) -> str:
    """One signature character changed, mid-signature (the last one may only hold padding
    bits, which base64 decoding ignores)."""
    header, payload, signature = token.split(".")
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return f"{header}.{payload}.{signature[:i]}{swapped}{signature[i + 1 :]}"


async def test_a_tampered_token_after_a_cached_good_one_is_401(decodes: list[str]) -> None:
    v = verifier()
    good = hs256()
    await v.verify(good)
    bad = tampered(good)
    for _ in range(3):
        assert (await refused(v, bad)).reason == "bad_signature"
    # The payload changed, signature kept: refused too.
    header, _payload, signature = good.split(".")
    other = jwt.encode({"sub": "intruder", "exp": int(time.time()) + 900}, "x" * 64, "HS256")
    forged = f"{header}.{other.split('.')[1]}.{signature}"
    assert (await refused(v, forged)).reason == "bad_signature"
    assert decodes.count(bad) == 3 and decodes.count(forged) == 1
    # Failures are not stored and evict nothing: the good token is still a hit.
    assert (await v.verify(good)).sub == "cached-user"
    assert decodes.count(good) == 1 and v.cached == 1


# --- bounded memory -----------------------------------------------------------------------------


async def test_the_cache_holds_at_most_cache_size_tokens_evicting_the_oldest(
    decodes: list[str],
) -> None:
    v = verifier(cache_size=3)
    tokens = [hs256(f"user-{i}") for i in range(5)]
    for token in tokens:
        await v.verify(token)
    assert v.cached == 3
    # The two oldest were evicted, the three newest are hits.
    for token in tokens[2:]:
        await v.verify(token)
    assert len(decodes) == 5
    await v.verify(tokens[0])
    assert len(decodes) == 6 and v.cached == 3
    # Whatever clients send that does not verify takes no room and evicts nothing.
    before = len(decodes)
    for i in range(50):
        await refused(v, tampered(hs256(f"user-{i}")))
        await refused(v, f"garbage.{i}.x")
    assert v.cached == 3
    for token in (tokens[0], tokens[3], tokens[4]):
        await v.verify(token)
    assert len(decodes) == before + 50, "a refused token evicted a cached one"


# --- JWKS: a changed key set is verified again --------------------------------------------------


def public_jwk(private: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid}


def eddsa(private: Ed25519PrivateKey, kid: str, sub: str = "jwks-user") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 900}, private, "EdDSA", {"kid": kid})


def jwks_verifier(
    document: Callable[[], dict[str, Any]], **cache: Any
) -> tuple[TokenVerifier, JWKSCache]:
    """A JWKS-only verifier whose JWKS is served by `document()` at each fetch."""

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=document())

    client = httpx.AsyncClient(transport=httpx.MockTransport(serve))
    jwks = JWKSCache("http://jwks.test/api/auth/jwks", client=client, **cache)
    return TokenVerifier(secret=None, jwks=jwks, leeway=LEEWAY), jwks


async def test_a_jwks_key_rotation_stops_serving_cached_jwks_tokens(decodes: list[str]) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = [public_jwk(old, "old")]
    v, jwks = jwks_verifier(lambda: {"keys": keys})
    try:
        await jwks.refresh(force=True)
        token = eddsa(old, "old")
        await v.verify(token)
        await v.verify(token)
        assert len(decodes) == 1, "a JWKS token was not served from the cache"

        # A refresh that brings the same keys changes nothing.
        await jwks.refresh(force=True)
        await v.verify(token)
        assert len(decodes) == 1

        # Rotation, the old key kept: verified once again, against the new key set.
        keys = [public_jwk(new, "new"), public_jwk(old, "old")]
        await jwks.refresh(force=True)
        await v.verify(token)
        await v.verify(token)
        assert len(decodes) == 2

        # The old key removed (revoked): its cached token is refused at once.
        keys = [public_jwk(new, "new")]
        await jwks.refresh(force=True)
        assert (await refused(v, token)).reason == "unknown_kid"
        assert v.cached == 0
        assert (await v.verify(eddsa(new, "new"))).sub == "jwks-user"
    finally:
        await jwks.aclose()


async def test_cache_hits_still_re_read_a_stale_jwks_so_a_removed_key_stops_verifying(
    decodes: list[str],
) -> None:
    """Keys older than `max_age` are re-read in the background on a request: a request
    served from the cache must start that re-read too, or a revoked key would verify its
    cached tokens for as long as they are re-sent."""
    key = Ed25519PrivateKey.generate()
    keys = [public_jwk(key, "k")]
    v, jwks = jwks_verifier(lambda: {"keys": keys}, max_age=0.2, min_refresh=0.0)
    try:
        await jwks.refresh(force=True)
        token = eddsa(key, "k")
        await v.verify(token)
        keys = []  # revoked at the identity provider
        await asyncio.sleep(0.3)
        assert not jwks.refreshing
        await v.verify(token)  # a hit, served with the keys held; starts the re-read
        assert len(decodes) == 1
        assert jwks.refreshing, "a cache hit did not re-read the stale JWKS"
        deadline = time.monotonic() + 5
        while jwks.refreshing:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert (await refused(v, token)).reason == "unknown_kid"
    finally:
        await jwks.aclose()
