"""Bearer-token verification: HS256/384/512 with the shared secret, or Better Auth's JWKS."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
import structlog

from api.settings import HMAC_MIN_SECRET_BYTES, MIN_SECRET_BYTES

log = structlog.get_logger(__name__)

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
# What Better Auth's jwt plugin can sign with; the key comes from the JWKS, chosen by `kid`.
JWKS_ALGORITHMS: Final = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})
#: Characters of `sub`: Better Auth's ids are 32 (or a 36-character UUID); `users.id` is text,
#: so the bound is ours, to keep a hostile id out of indexes and logs.
MAX_SUB_LENGTH: Final = 255
#: Characters of a bearer token: a Better Auth JWT is well under 1 KiB; a longer one is refused
#: before any base64 or JSON decoding is spent on it.
MAX_TOKEN_LENGTH: Final = 8192
#: Characters of `name`/`email`: 64 + "@" + 255, the bound of an address (RFC 3696 §3).
MAX_TEXT_CLAIM_LENGTH: Final = 320
#: Entries of TokenVerifier's verified-token cache, per process. A frontend re-sends one token
#: for its whole life (15 minutes for Better Auth), so this covers 10,000 signed-in users at
#: once; an entry is the token (under 1 KiB from Better Auth, at most MAX_TOKEN_LENGTH
#: characters) plus a Principal, so about 10-20 MiB at worst with real tokens.
VERIFIED_CACHE_SIZE: Final = 10_000


class AuthError(Exception):
    """A refused token: answered 401 with `WWW-Authenticate: Bearer` by `api.errors`.

    `reason` (a short snake_case word) is for logs and the `tasks_auth_failures_total` label
    only; `detail` is the envelope's client-facing text ("Not authenticated" when there is no
    usable token, "Token expired", else "Invalid token"), never the reason.
    """

    def __init__(self, reason: str, detail: str = "Invalid token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified user of a request: `sub` (the Better Auth user id, 1-255 characters, no
    control characters) and the optional `name`/`email` claims (None when absent or unusable),
    stored in `users` on the first write (contract, "Authentication and ownership")."""

    sub: str
    name: str | None = None
    email: str | None = None


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header value (None: no header).

    The scheme is case-insensitive (RFC 9110 §11.1; contract, "Authentication and ownership").
    Returns the token, stripped. Raises AuthError: `missing_token`, `wrong_scheme`,
    `empty_token` ("Not authenticated"), or `malformed` when it is over MAX_TOKEN_LENGTH.
    """
    if authorization is None:
        raise AuthError("missing_token", "Not authenticated")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("wrong_scheme", "Not authenticated")
    token = token.strip()
    if not token:
        raise AuthError("empty_token", "Not authenticated")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError("malformed")
    return token


def valid_sub(value: object) -> str:
    """The `sub` claim when it is a usable user id; raises AuthError("bad_sub") otherwise
    (contract: "a missing or non-string or empty `sub`: 401")."""
    if not isinstance(value, str) or value == "":
        raise AuthError("bad_sub")
    # The id is stored and compared byte for byte: no control characters or lone surrogates.
    if len(value) > MAX_SUB_LENGTH or any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise AuthError("bad_sub")
    return value


def _optional_text(value: object) -> str | None:
    """A `name`/`email` claim worth storing, else None: these never refuse a token."""
    if not isinstance(value, str) or value == "" or len(value) > MAX_TEXT_CLAIM_LENGTH:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return None
    return value


class JWKSTooLarge(ValueError):
    """The JWKS response is larger than the cache accepts (`max_bytes`, in bytes); a
    ValueError, so that the fetch logs it as a failed fetch like any unusable document."""


# What a JWK must be to verify each JWS algorithm: RFC 7518 §3.1 and RFC 8037 §3.1.
_KEY_TYPES: Final[dict[str, tuple[str, frozenset[str] | None]]] = {
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
# A JWKS with a few keys is a few KiB (an RSA-4096 key is about 800 bytes).
JWKS_MAX_BYTES: Final = 64 * 1024


def key_fits(jwk: dict[str, Any], algorithm: str) -> bool:
    """Whether the JWK (a JSON object, as parsed) can verify `algorithm` (one of
    JWKS_ALGORITHMS; KeyError for any other): its `kty` (and `crv`), its `alg` if it names
    one (RFC 7517 §4.4), and its `key_ops` if it lists them (§4.3), the way jose picks a key
    without `kid`. Never raises for any JSON value in the JWK's members."""
    kty, curves = _KEY_TYPES[algorithm]
    if jwk.get("kty") != kty:
        return False
    crv = jwk.get("crv")  # anything JSON can hold: a list here is unhashable
    if curves is not None and not (isinstance(crv, str) and crv in curves):
        return False
    if jwk.get("alg") not in (None, algorithm):
        return False
    ops = jwk.get("key_ops")
    return ops is None or (isinstance(ops, list) and "verify" in ops)


def _signing_keys(document: object) -> tuple[dict[str, Any], ...]:
    """The signature keys of a JWKS document (RFC 7517 §5), with or without `kid`.

    Raises ValueError when the document is not a JWKS.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no `keys` array)")
    return tuple(
        k for k in document["keys"] if isinstance(k, dict) and k.get("use", "sig") == "sig"
    )


class JWKSCache:
    """Better Auth's public keys, fetched with httpx (never blocking the loop) and cached.

    Contract, "Authentication and ownership" and "Running many instances":
    - An unknown `kid` (or a token without `kid` that no key fits) triggers a refetch, at
      most once per `min_refresh` seconds, so a flood of random `kid`s costs at most one
      fetch per interval.
    - Every fetch has one overall deadline of `timeout` seconds (connect, headers and the
      whole body; httpx's own timeouts apply per read, so a server that drips its body one
      byte at a time would otherwise hold the fetch for as long as it likes) and reads at
      most `max_bytes` bytes.
    - Single flight: concurrent refreshes share the fetch in flight; each waiter waits at most
      until that fetch's deadline. No lock is held across the network I/O, and a token whose
      key is cached never waits for a fetch.
    - A failed fetch keeps the keys it had and is logged (`jwks_fetch_failed`); the tokens that
      need a missing key get 401. Keys older than `max_age` seconds are re-read in the
      background (the request is not held up), so that a key removed from the JWKS (revoked)
      stops verifying without a restart.

    `url` is the JWKS URL (BETTER_AUTH_JWKS_URL, redirects not followed); `min_refresh`,
    `timeout` and `max_age` are seconds, `max_bytes` bytes. `client` is for tests; the cache
    closes it in `aclose` either way. `fetches` counts the fetches started (for tests).
    `generation` (an int) grows by one each time a fetch yields a key set different from the
    one held (a key added, rotated or removed): TokenVerifier's cache serves a token verified
    with a JWKS key only while the generation it was verified under is the current one.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh: float = 5.0,
        timeout: float = 3.0,
        max_age: float = 300.0,
        max_bytes: int = JWKS_MAX_BYTES,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_age = max_age
        self._min_refresh = min_refresh
        self._max_bytes = max_bytes
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._keys: tuple[dict[str, Any], ...] = ()
        self._by_kid: dict[str, list[int]] = {}
        # (index in _keys, algorithm) -> the parsed key, or None when it does not parse.
        self._parsed: dict[tuple[int, str], jwt.PyJWK | None] = {}
        self._fetched_at = float("-inf")
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self._deadline = 0.0  # loop time at which the fetch in flight gives up
        self.fetches = 0
        self.generation = 0

    @property
    def refreshing(self) -> bool:
        """A fetch is in flight."""
        return self._inflight is not None and not self._inflight.done()

    async def aclose(self) -> None:
        """Cancel the fetch in flight (waiting at most `timeout` seconds) and close the HTTP
        client; at shutdown, so that no task outlives the event loop."""
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.wait({self._inflight}, timeout=self.timeout)
        await self._client.aclose()

    def _start(self, *, force: bool) -> asyncio.Task[None] | None:
        """The fetch in flight, else a new one; None when the last attempt is too recent."""
        if self._inflight is not None and not self._inflight.done():
            return self._inflight
        now = time.monotonic()
        if not force and now - self._last_attempt < self._min_refresh:
            return None
        self._last_attempt = now
        self._deadline = asyncio.get_running_loop().time() + self.timeout
        self._inflight = asyncio.create_task(self._fetch(self._deadline), name="jwks-fetch")
        return self._inflight

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the JWKS, or join the fetch in flight; return by that fetch's deadline.

        `force` ignores `min_refresh` (the warm-up at start). Never raises for a failed fetch.
        """
        task = self._start(force=force)
        if task is None:
            return
        remaining = self._deadline - asyncio.get_running_loop().time()
        # asyncio.wait neither cancels the shared fetch when this waiter is cancelled (a client
        # that went away) nor raises its outcome: the fetch logs its own failure.
        await asyncio.wait({task}, timeout=max(remaining, 0.0))

    async def _fetch(self, deadline: float) -> None:
        """One fetch, ending by `deadline` (loop time); on success replace the keys, on
        failure log `jwks_fetch_failed` and keep them. Never raises but CancelledError."""
        self.fetches += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline):
                body = await self._download()
            keys = _signing_keys(json.loads(body))
        except TimeoutError:
            log.warning(
                "jwks_fetch_failed",
                url=self.url,
                error=f"no complete answer within {self.timeout:g}s",
            )
            return
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeDecodeError) as exc:
            log.warning("jwks_fetch_failed", url=self.url, error=f"{type(exc).__name__}: {exc}")
            return
        by_kid: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            if "kid" in key:
                by_kid.setdefault(str(key["kid"]), []).append(index)
        if keys != self._keys:
            # Tokens verified with the old keys are verified again, against these.
            self.generation += 1
        # Replaced together, with no await in between: a reader never sees a mix.
        self._keys, self._by_kid, self._parsed = keys, by_kid, {}
        self._fetched_at = time.monotonic()
        log.info(
            "jwks_fetched",
            url=self.url,
            kids=sorted(by_kid),
            keys=len(keys),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _download(self) -> bytes:
        """The response body, at most `max_bytes` bytes; raises httpx errors or JWKSTooLarge."""
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        async with self._client.stream("GET", self.url, headers=headers) as response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise JWKSTooLarge(f"Content-Length {declared} > {self._max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise JWKSTooLarge(f"body over {self._max_bytes} bytes")
            return bytes(body)

    def _parse(self, index: int, algorithm: str) -> jwt.PyJWK | None:
        """The key at `index` as a PyJWK for `algorithm`, parsed once; None if unusable."""
        cache_key = (index, algorithm)
        if cache_key not in self._parsed:
            try:
                self._parsed[cache_key] = jwt.PyJWK(self._keys[index], algorithm=algorithm)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                # InvalidKeyError too: a malformed key in the JWKS was a 500.
                self._parsed[cache_key] = None
        return self._parsed[cache_key]

    def _candidates(self, kid: str | None, algorithm: str) -> list[jwt.PyJWK]:
        """The usable keys for `algorithm`: among those named `kid`, or among all without one."""
        indices = range(len(self._keys)) if kid is None else self._by_kid.get(kid, [])
        found = []
        for index in indices:
            if key_fits(self._keys[index], algorithm):
                parsed = self._parse(index, algorithm)
                if parsed is not None:
                    found.append(parsed)
        return found

    def refresh_if_stale(self) -> None:
        """Start a fetch in the background when the keys are older than `max_age` seconds
        (and the last attempt is older than `min_refresh`); never waits, never raises. Called
        for every JWKS token, also one served from TokenVerifier's cache, so that a removed key
        stops verifying within about `max_age` seconds. Needs a running event loop."""
        if time.monotonic() - self._fetched_at > self.max_age:
            self._start(force=False)

    async def key_for(self, kid: object, algorithm: str) -> jwt.PyJWK:
        """The key that verifies a token with this `kid` header (None: absent) and `alg`.

        With a `kid`, the JWKS keys of that `kid`; without, every key: exactly one of them must
        fit `alg` (contract: "A token without `kid` is verified when exactly one JWKS key fits
        its `alg`"). Raises AuthError (401) otherwise: `malformed_kid` (not a non-empty
        string), `unknown_kid`, `no_fitting_key` or `ambiguous_key`. Waits for a fetch (at
        most `timeout` seconds) only when no cached key could do.
        """
        if kid is not None and (not isinstance(kid, str) or not kid):
            raise AuthError("malformed_kid")
        self.refresh_if_stale()
        candidates = self._candidates(kid, algorithm)
        if not candidates and (kid is None or kid not in self._by_kid):
            await self.refresh()
            candidates = self._candidates(kid, algorithm)
        if len(candidates) == 1:
            return candidates[0]
        if kid is not None and kid not in self._by_kid:
            raise AuthError("unknown_kid")
        raise AuthError("no_fitting_key" if not candidates else "ambiguous_key")


#: What TokenVerifier's cache keeps of a verified token: its Principal; `valid_from`, the
#: larger of `nbf` and `iat` (-inf when it has neither) and `expires`, its `exp`, both as
#: PyJWT compares them (int() of the NumericDate, seconds since the epoch); and the
#: JWKSCache.generation its key came from (None: HMAC, whose secret never changes).
_Verified = tuple[Principal, float, int, int | None]


class TokenVerifier:
    """Verifies a bearer token and returns its Principal; every refusal is an AuthError (401).

    `secret` (UTF-8) must be at least 32 bytes (RFC 7518 §3.2; ValueError otherwise, which
    Settings already refuses at start-up); HS384 and HS512 tokens are accepted only when it is
    at least 48 and 64 bytes, the length of their hash output.

    `jwks` verifies the asymmetric algorithms (None: they are refused); `issuer` and
    `audience` are checked only when set (JWT_ISSUER, JWT_AUDIENCE); `leeway` is the clock
    skew in seconds allowed on `exp`/`nbf`/`iat` (JWT_LEEWAY_SECONDS). Contract,
    "Authentication and ownership".

    Verified-token cache, as Envoy's jwt_authn filter keeps one (`jwt_cache_config`): a
    frontend sends the same token for minutes, and full verification (header and payload
    base64 and JSON, the key, the signature) was about a fifth of the CPU of a request.
    - Key: the whole compact token string, signature included, so a token differing in any
      character is another key and is verified in full. Only successes are stored: a refused
      token costs no memory and evicts nothing, whatever clients send.
    - On a hit the time claims are enforced again, exactly as PyJWT does on every
      verification (`iat`/`nbf` > now + leeway: not yet valid; `exp` <= now - leeway:
      expired; RFC 7519 §4.1.4-4.1.6), with `clock` (seconds since the epoch; PyJWT's own
      clock is the same wall clock, `datetime.now(UTC)`). An entry outside that window is
      dropped and the token verified in full, so that the refusal (reason and detail, e.g.
      "Token expired") is the one a first verification gives.
    - A token verified with a JWKS key is served only while `jwks.generation` is the one it
      was verified under: after a fetch that changed the keys (rotation, removal) it is
      verified again. A hit also lets a stale JWKS be re-read in the background, as a full
      verification would (JWKSCache.refresh_if_stale).
    - At most `cache_size` entries (0: no cache); when full, the oldest stored is evicted.
    A plain dict, not cachetools: measured per hit (a 10,000-entry cache, a fresh 400-character
    token string, the checks above; Python 3.11 on this 2-core machine) the dict took 0.34 us,
    cachetools.FIFOCache 0.45 us and cachetools.TLRUCache 1.4 us, against 36 us for a full
    HS256 verification. TLRUCache's time-to-use covers only `exp` (nbf, iat and the JWKS
    generation must be checked here all the same), and FIFO eviction on an insertion-ordered
    dict is two lines: a dependency would buy nothing for a 4x slower hit.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JWKSCache | None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: int = 30,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None and len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ValueError(f"the HMAC secret must be at least {MIN_SECRET_BYTES} bytes")
        if cache_size < 0:
            raise ValueError("cache_size must be 0 or more")
        self._secret = secret
        self._secret_bytes = 0 if secret is None else len(secret.encode("utf-8"))
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._cache_size = cache_size
        self._clock = clock
        # Insertion-ordered: the first key is the oldest entry.
        self._verified: dict[str, _Verified] = {}

    @property
    def cached(self) -> int:
        """The number of tokens in the verified-token cache (at most `cache_size`)."""
        return len(self._verified)

    async def verify(self, token: str) -> Principal:
        """The Principal of a compact JWS `token` (as from `bearer_token`).

        The header's `alg` picks the key: HMAC only with the secret, never a public key, and
        `none` never (RFC 8725 §3.1-3.2); `exp` is required. Raises AuthError (401) for
        every refusal, its `reason` naming which (e.g. `expired`, whose detail is "Token
        expired", `bad_signature`, `algorithm_not_allowed`). May wait for a JWKS fetch, at
        most the cache's `timeout` seconds. A token verified before is answered from the
        cache (see the class) while its time claims and JWKS generation still hold.
        """
        entry = self._verified.get(token)
        if entry is not None:
            principal, valid_from, expires, generation = entry
            now = self._clock()
            # PyJWT's own comparisons (api_jwt._validate_iat/_nbf/_exp), with the same leeway.
            if valid_from <= now + self._leeway and expires > now - self._leeway:
                if generation is None:
                    return principal
                if self.jwks is not None and generation == self.jwks.generation:
                    self.jwks.refresh_if_stale()
                    return principal
            # Outside its time window, or its key set was replaced: verified again below.
            del self._verified[token]
        principal, entry = await self._verify_fully(token)
        if self._cache_size:
            if token not in self._verified and len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = entry
        return principal

    async def _verify_fully(self, token: str) -> tuple[Principal, _Verified]:
        """`verify` without the cache: the Principal and the cache entry for it."""
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            # InvalidTokenError, not only DecodeError: PyJWT raises it for a non-string `kid`.
            raise AuthError("malformed") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            # A list or object here is unhashable in the set lookups below: it was a 500.
            raise AuthError("algorithm_not_allowed")
        key: Any
        generation: int | None = None  # HMAC: the secret never changes
        if algorithm in HMAC_ALGORITHMS:
            # HMAC is only ever checked against the shared secret, never a public key.
            if self._secret is None:
                raise AuthError("hmac_not_configured")
            if self._secret_bytes < HMAC_MIN_SECRET_BYTES[algorithm]:
                # RFC 7518 §3.2: a key shorter than the hash output is not accepted for it.
                raise AuthError("secret_too_short_for_alg")
            key = self._secret
        elif algorithm in JWKS_ALGORITHMS:
            if self.jwks is None:
                raise AuthError("jwks_not_configured")
            key = await self.jwks.key_for(header.get("kid"), algorithm)
            # No await since key_for chose the key: these are the keys of this generation.
            generation = self.jwks.generation
        else:
            raise AuthError("algorithm_not_allowed")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                    "verify_sub": False,  # checked below, with our own rules
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired", "Token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("not_yet_valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("bad_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("bad_issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("bad_signature") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("missing_claim") from exc
        except jwt.InvalidKeyError as exc:  # e.g. a P-256 key asked to verify ES512: was a 500
            raise AuthError("unusable_key") from exc
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError, TypeError) as exc:
            raise AuthError("invalid") from exc
        # RFC 7519 §4.1.4-4.1.6: exp, nbf and iat are NumericDate, a JSON number; PyJWT
        # also accepts a numeric string ("exp": "1796036570").
        for claim in ("exp", "nbf", "iat"):
            value = claims.get(claim)
            if claim in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise AuthError("invalid")
        principal = Principal(
            sub=valid_sub(claims.get("sub")),
            name=_optional_text(claims.get("name")),
            email=_optional_text(claims.get("email")),
        )
        # int() as PyJWT compares them; it succeeded on each of these in jwt.decode.
        valid_from = max(
            (int(claims[claim]) for claim in ("nbf", "iat") if claim in claims),
            default=float("-inf"),
        )
        return principal, (principal, valid_from, int(claims["exp"]), generation)
