"""Route matching for the contract's "HTTP semantics": HEAD, trailing slashes and `Allow`.

Configured on the routes themselves rather than in a middleware, so OpenAPI keeps one
operation per route (no `head` operations, no slash variants) and nothing runs per request
beyond the match Starlette already does:

- `HEAD` is answered wherever `GET` is, with the same status and headers and no body
  (RFC 9110 §9.3.2). Starlette's `Route` adds HEAD for GET; FastAPI's `APIRoute` does not
  (fastapi/fastapi#1773), so `HTTPRoute` does it without listing HEAD in `methods`.
- A trailing slash is matched as the path without it; with `redirect_slashes=False` on the
  app nothing ever answers with a redirect (a 307 to `http://` behind a TLS proxy is mixed
  content, and clients drop `Authorization` on redirects).
- A 405 lists in `Allow` every method of the path, from all its routes
  (`allowed_methods`), not the methods of the first route that matched it (RFC 9110 §15.5.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Message, Receive, Scope, Send

#: The order in which `Allow` lists methods (the contract's: `GET, HEAD, POST`).
METHOD_ORDER: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class HTTPRoute(APIRoute):
    """An APIRoute that answers HEAD like GET (without a body) and ignores one trailing slash.

    Takes APIRoute's arguments unchanged; `methods` never needs HEAD (OpenAPI would list it).
    """

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        if not path.endswith("/"):
            # compile_path gives "^…$": accept one optional "/" before the end.
            pattern = self.path_regex.pattern
            assert pattern.endswith("$"), pattern
            self.path_regex = re.compile(pattern[:-1] + "/?$")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, with HEAD a FULL match wherever GET is (else it is PARTIAL: 405)."""
        match, child_scope = super().matches(scope)
        if match is Match.PARTIAL and scope["method"] == "HEAD" and "GET" in self.methods:
            return Match.FULL, child_scope
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the endpoint; for HEAD, the GET endpoint with its body bytes dropped."""
        if scope["method"] == "HEAD" and "GET" in self.methods:
            await self.app(scope, receive, _without_body(send))
            return
        await super().handle(scope, receive, send)


def _without_body(send: Send) -> Send:
    """HEAD: the GET response's status and headers (Content-Length included), no body bytes,
    whatever the server does with a HEAD response body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The `Allow` value for the scope's path: the methods of every route matching it, HEAD
    wherever GET is, in METHOD_ORDER (e.g. "GET, HEAD, POST")."""
    methods: set[str] = set()
    probe = {**scope, "method": "\0"}  # a method no route has: any path match is PARTIAL
    for route in routes:
        match, _ = route.matches(probe)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    known = [m for m in METHOD_ORDER if m in methods]
    return ", ".join(known + sorted(methods.difference(METHOD_ORDER)))
