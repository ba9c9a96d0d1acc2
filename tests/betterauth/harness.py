"""Real Better Auth (server.mjs beside this file) as a loopback process; the API in process."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.support import free_port, require, wait_http

HERE = Path(__file__).resolve().parent


def require_node_harness() -> str:
    node = shutil.which("node")
    require(node is not None, "node is not installed (scripts/ci/setup-node.sh installs it)")
    require(
        (HERE / "node_modules" / "better-auth" / "package.json").is_file(),
        "tests/betterauth/node_modules is missing: run scripts/ci/setup-node.sh (npm ci)",
    )
    assert node is not None
    return node


@dataclass
class User:
    id: str
    email: str
    name: str
    cookies: httpx.Cookies


@dataclass
class BetterAuth:
    base_url: str
    alg: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def jwks_url(self) -> str:
        return self.base_url + "/api/auth/jwks"

    def sign_up(self, name: str = "Ada") -> User:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        response = httpx.post(
            self.base_url + "/api/auth/sign-up/email",
            json={"email": email, "password": "correct-horse-battery", "name": name},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return User(response.json()["user"]["id"], email, name, response.cookies)

    def token(self, user: User) -> str:
        """What a frontend does: GET /api/auth/token with the session cookie."""
        response = httpx.get(self.base_url + "/api/auth/token", cookies=user.cookies, timeout=10)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def session_jwt(self, user: User) -> str:
        """The other way: the set-auth-jwt header of GET /api/auth/get-session."""
        response = httpx.get(
            self.base_url + "/api/auth/get-session", cookies=user.cookies, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.headers["set-auth-jwt"]

    def rotate(self) -> None:
        httpx.post(self.base_url + "/__harness/rotate", timeout=10).raise_for_status()

    def delay_jwks(self, ms: int) -> None:
        url = self.base_url + "/__harness/jwks-delay"
        httpx.post(url, json={"ms": ms}, timeout=10).raise_for_status()

    def revoke(self) -> None:
        httpx.post(self.base_url + "/__harness/revoke", timeout=10).raise_for_status()

    def drop_kids(self) -> None:
        """The stored keys lose their ids: the JWKS and new tokens have no `kid` from now on."""
        httpx.post(self.base_url + "/__harness/drop-kids", timeout=10).raise_for_status()

    def sign(self, payload: dict[str, Any]) -> str:
        """Better Auth's own signJWT with its current key (for claims a session never gets)."""
        response = httpx.post(
            self.base_url + "/__harness/sign", json={"payload": payload}, timeout=10
        )
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def jwks_requests(self) -> int:
        response = httpx.get(self.base_url + "/__harness/stats", timeout=10)
        response.raise_for_status()
        return int(response.json()["jwks_requests"])

    def jwks(self) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(self.jwks_url, timeout=10).json()
        return document


@contextlib.contextmanager
def better_auth(
    alg: str = "EdDSA", *, port: int | None = None, host: str = "127.0.0.1", **env: str
) -> Iterator[BetterAuth]:
    """Start server.mjs on a loopback port (a free one unless given); always stopped afterwards.

    `host` is the host name of Better Auth's base URL (its iss/aud); it listens on 127.0.0.1.
    """
    node = require_node_harness()
    port = port or free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="betterauth-"))
    log_path = log_dir / "server.log"
    full_env = {
        **os.environ,
        "PORT": str(port),
        "BA_ALG": alg,
        "BA_HOST": host,
        "BETTER_AUTH_TELEMETRY": "0",
        "NODE_ENV": "test",
        **env,
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [node, "server.mjs"], cwd=HERE, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
        base = f"http://{host}:{port}"
        try:
            try:
                wait_http(f"http://127.0.0.1:{port}/api/auth/ok", timeout=30, proc=proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}; log: {log_path.read_text()[-2000:]}") from exc
            yield BetterAuth(base, alg, proc, log_path)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def api(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The API in process, lifespan run (pool, JWKS warm-up), behind an httpx client."""
    from api.app import create_app

    app = create_app(make_settings(database_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
