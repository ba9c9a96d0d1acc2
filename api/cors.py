"""CORS with refused preflights in the error envelope (contract, "HTTP semantics").

Starlette's CORSMiddleware answers a refused preflight with 400 and a plain-text body; the
frontend's error handling expects `{"status_code", "detail"}` everywhere. Allowed preflights
and simple requests are left exactly as Starlette answers them.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from api.errors import error_response

_BODY_HEADERS = frozenset({"content-type", "content-length"})


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORSMiddleware whose refused preflight (400, "Disallowed CORS origin,
    method, headers") is the JSON envelope, with the same status and CORS headers."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """Starlette's answer to the preflight; if it is a refusal (status >= 400), the same
        status and headers with the envelope, its `detail` Starlette's text."""
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        detail = bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
        return error_response(response.status_code, detail, headers=headers)
