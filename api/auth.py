"""Bearer-token verification: HS256/384/512 with the shared secret, or Better Auth's JWKS."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
import structlog

log = structlog.get_logger(__name__)

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
# What Better Auth's jwt plugin can sign with; the key comes from the JWKS, chosen by `kid`.
JWKS_ALGORITHMS: Final = frozenset({"EdDSA", "ES256", "ES512", "RS256", "PS256"})
MAX_SUB_LENGTH: Final = 255
MAX_TOKEN_LENGTH: Final = 8192


class AuthError(Exception):
    """401: `reason` is for logs and metrics, `detail` is what the client sees."""

    def __init__(self, reason: str, detail: str = "Invalid token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    name: str | None = None
    email: str | None = None


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header; the scheme is case-insensitive."""
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


def _valid_sub(value: object) -> str:
    if not isinstance(value, str) or value == "":
        raise AuthError("bad_sub")
    # The id is stored and compared byte for byte: no control characters or lone surrogates.
    if len(value) > MAX_SUB_LENGTH or any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise AuthError("bad_sub")
    return value


def _optional_text(value: object) -> str | None:
    if not isinstance(value, str) or value == "" or len(value) > 320:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return None
    return value


class JWKSCache:
    """Better Auth's public keys, fetched with httpx (never blocking the loop) and cached.

    An unknown `kid` triggers a refetch, at most once per `min_refresh` seconds, so a flood of
    tokens with random `kid`s costs at most one fetch per interval. A failed fetch keeps the
    keys it had and is logged; the tokens that need a missing key get 401. Keys older than
    `max_age` are re-read in the background (the request is not held up), so that a key
    removed from the JWKS (revoked) stops verifying without a restart.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh: float = 5.0,
        timeout: float = 3.0,
        max_age: float = 300.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._min_refresh = min_refresh
        self.max_age = max_age
        self._fetched_at = float("-inf")
        self._background: asyncio.Task[None] | None = None
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._keys: dict[str, dict[str, Any]] = {}
        self._parsed: dict[tuple[str, str], jwt.PyJWK] = {}
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
        await self._client.aclose()

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            now = time.monotonic()
            if not force and now - self._last_attempt < self._min_refresh:
                return
            self._last_attempt = now
            self.fetches += 1
            try:
                response = await self._client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                document = response.json()
                keys = {
                    str(k["kid"]): k
                    for k in document["keys"]
                    if isinstance(k, dict) and "kid" in k and k.get("use", "sig") == "sig"
                }
            except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError) as exc:
                log.warning("jwks_fetch_failed", url=self.url, error=f"{type(exc).__name__}: {exc}")
                return
            self._keys = keys
            self._fetched_at = now
            self._parsed = {}
            log.info("jwks_fetched", url=self.url, kids=sorted(keys))

    async def key_for(self, kid: object, algorithm: str) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise AuthError("missing_kid")
        if kid not in self._keys:
            await self.refresh()
        elif time.monotonic() - self._fetched_at > self.max_age and (
            self._background is None or self._background.done()
        ):
            self._background = asyncio.create_task(self.refresh())
        jwk = self._keys.get(kid)
        if jwk is None:
            raise AuthError("unknown_kid")
        # A key that names its algorithm is only ever used with that algorithm.
        if jwk.get("alg") not in (None, algorithm):
            raise AuthError("algorithm_mismatch")
        parsed = self._parsed.get((kid, algorithm))
        if parsed is None:
            try:
                parsed = jwt.PyJWK(jwk, algorithm=algorithm)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
                # InvalidKeyError too: a key that does not fit the token's `alg` (an EC key for
                # EdDSA, when the JWKS names no `alg`) or a malformed key was a 500.
                raise AuthError("unusable_key") from exc
            self._parsed[(kid, algorithm)] = parsed
        return parsed


class TokenVerifier:
    def __init__(
        self,
        *,
        secret: str | None,
        jwks: JWKSCache | None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: int = 30,
    ) -> None:
        self._secret = secret
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str) -> Principal:
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
        if algorithm in HMAC_ALGORITHMS:
            # HMAC is only ever checked against the shared secret, never a public key.
            if self._secret is None:
                raise AuthError("hmac_not_configured")
            key = self._secret
        elif algorithm in JWKS_ALGORITHMS:
            if self.jwks is None:
                raise AuthError("jwks_not_configured")
            key = await self.jwks.key_for(header.get("kid"), algorithm)
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
        return Principal(
            sub=_valid_sub(claims.get("sub")),
            name=_optional_text(claims.get("name")),
            email=_optional_text(claims.get("email")),
        )
