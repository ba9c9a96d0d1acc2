"""Authentication and ownership, checked before anything else of a request is looked at.

Contract, "Authentication and ownership": a bad or missing token is 401 (with
`WWW-Authenticate: Bearer`), a path `user_id` other than the token's `sub` is 403, and only
then come 404 and 422. FastAPI parses the body before it runs dependencies, so the checks
live in the route class, which runs first.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from api.auth import AuthError, Principal, TokenVerifier, bearer_token
from api.binding import from_request
from api.body import JSONBodyRoute
from api.errors import forbidden, response_for, unauthorized

# Documents the bearer scheme in OpenAPI; the check itself runs in AuthenticatedRoute.
bearer_scheme: Final = HTTPBearer(auto_error=False, bearerFormat="JWT")


def _single_authorization(request: Request) -> str | None:
    """The Authorization header, which RFC 9110 §11.6.2 allows once: with several, a proxy
    that checked the last and this service that read the first could disagree, so two are
    a malformed request (401)."""
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise AuthError("malformed")
    return values[0] if values else None


class AuthenticatedRoute(JSONBodyRoute):
    """Token (401), then owner (403), then the endpoint; every error in the envelope.

    The verifier is `app.state.verifier` (a TokenVerifier, set in the lifespan). Sets
    `request.state.user_id` (for the access log) and `request.state.principal`.
    Exceptions raised below become envelope responses here, through `api.errors`, so that
    they pass back through CORS with their headers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The JSON-body handler behind the token and owner checks; it returns a Response
        for every outcome and raises nothing but cancellation."""
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            verifier: TokenVerifier = request.app.state.verifier
            try:
                principal = await verifier.verify(bearer_token(_single_authorization(request)))
            except AuthError as exc:
                return unauthorized(exc)
            request.state.user_id = principal.sub
            if request.path_params.get("user_id") != principal.sub:
                return forbidden()
            request.state.principal = principal
            try:
                return await handler(request)
            except Exception as exc:
                return response_for(exc)

        return authenticated


def principal_of(request: Request) -> Principal:
    """The Principal AuthenticatedRoute verified for `request` (`request.state.principal`)."""
    principal: Principal = request.state.principal
    return principal


@from_request(principal_of)
async def current_user(
    request: Request,
    user_id: Annotated[
        str, Path(description="The Better Auth user id; must equal the token's sub")
    ],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Principal:
    """The principal AuthenticatedRoute verified; never raises on such a route.

    Its parameters only declare, in OpenAPI, the path's `user_id` and the bearer security
    scheme (contract, "Service endpoints": every endpoint documents its security scheme).
    """
    return principal_of(request)


#: An endpoint parameter: the request's verified Principal.
CurrentUser = Annotated[Principal, Depends(current_user)]
