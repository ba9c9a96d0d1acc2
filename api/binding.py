"""A task route's parameters bound in one pass, instead of FastAPI's per-request solving.

FastAPI (0.119, and still 0.165) inspects every dependency and parameter again on every
request: `solve_dependencies` asks `inspect` whether each dependency is a generator, asks
`is_sequence_field` of each parameter twice, builds a sub-response and walks each parameter
list twice. That was 30 % of the app's CPU on `GET /api/{user_id}/tasks/{task_id}`, the
largest item in issue 13's profile (loadtest/README.md, "Capacity"). A task route's
parameters are few and fixed, so `Binding` reads FastAPI's own `Dependant` once, when the
route is built, and binds a request with what FastAPI would compute, minus the inspection:

- each dependency is computed by the request-level twin registered with `from_request`, which
  returns and raises what the dependency does (TaskNotFound, HTTPException…);
- query parameters are validated by FastAPI's own `ModelField.validate`, missing ones take the
  field's default, the last of repeated ones wins, exactly as `request_params_to_args`;
- the body by the body field's `validate`, after the strict JSON parse (api/body.py).

A request that fails any validation (or whose body is not JSON) is not bound: `bind` returns
None and the route hands it to FastAPI's own handler, which answers it as it always has (the
400 and 422 bodies are FastAPI's, byte for byte). Only valid requests take the short path, and
tests/test_binding.py checks that both paths answer every request alike. A route whose
parameters `Binding` cannot describe is not bound at all (`Binding.of` returns None).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.responses import Response

#: request → a dependency's value (or an awaitable of it)
Twin = Callable[[Request], Any]

_TWINS: Final[dict[Callable[..., Any], Twin]] = {}
_IMMUTABLE: Final = (str, int, float, bool, bytes, type(None), tuple, frozenset)
F = TypeVar("F", bound=Callable[..., Any])


def from_request(twin: Twin | None = None) -> Callable[[F], F]:
    """Register the decorated dependency as computable from the Request alone.

    `twin(request)` must return (or, if a coroutine function, resolve to) what FastAPI would
    pass for the dependency, and raise what it raises; without `twin`, the dependency itself
    is called with the request as its only argument (its other parameters must then have
    defaults and serve only to document the request in OpenAPI). The dependency's own
    parameters are not validated on the short path: they must be ones that cannot fail (a
    `str` path parameter, an optional header), as a `Binding` skips them.
    """

    def register(dependency: F) -> F:
        _TWINS[dependency] = twin if twin is not None else dependency
        return dependency

    return register


class Binding:
    """The parameters of one route, bound from a request without FastAPI's solving.

    Built by `Binding.of(route)`; `bind(request)` gives the endpoint's keyword arguments or
    None (hand the request to FastAPI), `call(values)` runs the endpoint.
    """

    def __init__(self, route: APIRoute) -> None:
        dependant = route.dependant
        self._endpoint = route.endpoint
        # The app: while it has `dependency_overrides` (tests do that), FastAPI binds.
        self._overrides = route.dependency_overrides_provider
        self._request_name = dependant.request_param_name
        self._dependencies = [
            (d.name, _TWINS[d.call], inspect.iscoroutinefunction(_TWINS[d.call]))
            for d in dependant.dependencies
            if d.call is not None and d.name is not None  # always (`of`); narrows the types
        ]
        self._query = [(f.name, f.alias, f.required, f.default, f) for f in dependant.query_params]
        # FastAPI validates a single, not embedded body with the parameter's own field.
        self._body = dependant.body_params[0] if dependant.body_params else None

    @classmethod
    def of(cls, route: APIRoute) -> Binding | None:
        """The route's Binding, or None when one of its parameters is of a kind it does not
        bind (a path, header or cookie parameter of the endpoint itself, a dependency without
        a registered twin, an embedded or form body, a Response or BackgroundTasks
        parameter, a mutable default, a sync endpoint, or one that does not return a
        Response)."""
        dependant: Dependant = route.dependant
        endpoint = route.endpoint
        signature = inspect.signature(endpoint)
        if (
            dependant.path_params
            or dependant.header_params
            or dependant.cookie_params
            or len(dependant.body_params) > 1
            or route._embed_body_fields
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or dependant.websocket_param_name
            or dependant.http_connection_param_name
            or dependant.security_scopes_param_name
            or not inspect.iscoroutinefunction(endpoint)
            or signature.return_annotation not in (Response, "Response")
            or any(d.call not in _TWINS or d.name is None for d in dependant.dependencies)
            or any(not f.required and not isinstance(f.default, _IMMUTABLE)
                   for f in [*dependant.query_params, *dependant.body_params])
            or any(getattr(f.field_info, "media_type", "") != "application/json"
                   for f in dependant.body_params)
        ):  # fmt: skip
            return None
        return cls(route)

    async def bind(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's keyword arguments for `request`, or None when a query parameter or
        the body is invalid, or the app has `dependency_overrides` (FastAPI's handler then
        answers). Raises what the dependencies' twins raise (TaskNotFound, HTTPException), in
        declaration order, before any query or body check, as FastAPI's solving does."""
        if getattr(self._overrides, "dependency_overrides", None):
            return None  # FastAPI applies the overrides
        values: dict[str, Any] = {}
        body: Any = None
        if self._body is not None:
            raw = await request.body()
            if raw:
                try:
                    body = await request.json()
                except ValueError:  # json.JSONDecodeError: FastAPI's 400
                    return None
        for name, twin, is_async in self._dependencies:
            values[name] = await twin(request) if is_async else twin(request)
        if self._query:
            query = request.query_params
            for name, alias, required, default, field in self._query:
                raw_value = query.get(alias)
                if raw_value is None:
                    if required:
                        return None
                    values[name] = default
                    continue
                value, errors = field.validate(raw_value, values, loc=("query", alias))
                if errors:
                    return None
                values[name] = value
        if self._body is not None:
            if body is None:
                if self._body.required:
                    return None
                values[self._body.name] = self._body.default
            else:
                value, errors = self._body.validate(body, values, loc=("body",))
                if errors:
                    return None
                values[self._body.name] = value
        if self._request_name:
            values[self._request_name] = request
        return values

    def call(self, values: dict[str, Any]) -> Awaitable[Response]:
        """The endpoint called with `bind`'s arguments (its Response, or what it raises)."""
        response: Awaitable[Response] = self._endpoint(**values)
        return response
