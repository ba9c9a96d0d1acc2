"""/docs (Swagger UI) with its assets served by the service itself, so it works offline.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so they are blank without
internet. This follows FastAPI's self-hosting recipe ("Custom Docs UI Static Assets":
`docs_url=None`, `get_swagger_ui_html(swagger_js_url=…, swagger_css_url=…)`), with the files
shipped in the `fastapi-offline` wheel (Swagger UI 5, which renders OpenAPI 3.1). Contract:
"Service endpoints", `/docs` working without internet.

/redoc is not served: the ReDoc bundle fetches its logo from cdn.redoc.ly whatever the page
says, so it is not offline.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from api.routing import HTTPRoute

ASSETS_PATH: Final = "/docs/assets"
# The only files served, by name: nothing else under the package folder is reachable.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_ASSET_DIR: Final = Path(str(files("fastapi_offline") / "static"))
# The files change only with the package version: a day of browser caching is safe.
_CACHE_CONTROL: Final = "public, max-age=86400"

router = APIRouter(include_in_schema=False, route_class=HTTPRoute)


def _asset_url(request: Request, name: str) -> str:
    """The asset's URL path, under the app's `root_path` (behind a path-prefixing proxy)."""
    return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"


def _openapi_url(request: Request) -> str:
    """The OpenAPI document's URL path, under the app's `root_path`."""
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """The Swagger UI page, its script, style sheet and icon from ASSETS_PATH."""
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "favicon.png"),
        # Swagger UI would otherwise send the document to validator.swagger.io for its badge.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    """FastAPI's OAuth2 redirect page, which Swagger UI's "Authorize" dialog expects."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of ASSETS by `name`, with a day of caching; any other name is 404 (in the API's
    JSON error shape), so no path under the package folder can be reached."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(
        _ASSET_DIR / name, media_type=media_type, headers={"Cache-Control": _CACHE_CONTROL}
    )
