"""The API documentation pages, served from files installed on this host (never a CDN).

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from jsDelivr and a
favicon from fastapi.tiangolo.com, so on an offline host they render nothing. The agent
turns those off and serves the same pages with every asset taken from the
``fastapi-offline`` package (Swagger UI 5 and ReDoc 2 bundles under their Apache-2.0 and
MIT licences, listed in that package's LICENSE), mounted at `ASSETS_URL`:

* ``GET /docs``: Swagger UI over ``/openapi.json`` (and its OAuth2 redirect page);
* ``GET /redoc``: ReDoc over ``/openapi.json``;
* ``GET /docs/assets/{swagger-ui-bundle.js,swagger-ui.css,redoc.standalone.js,favicon.png}``.

Like ``/openapi.json`` they hold no data and need no token.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from corral.errors import CorralError

ASSETS_URL: Final = "/docs/assets"
"""Where the Swagger UI and ReDoc files are served."""
ASSET_FILES: Final = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "redoc.standalone.js",
    "favicon.png",
)
"""The files the two pages load, all from `assets_dir`."""


class DocsAssetsMissingError(CorralError):
    """The Swagger UI / ReDoc files are not installed."""


def assets_dir() -> Path:
    """The directory holding `ASSET_FILES` (from the ``fastapi-offline`` package);
    `DocsAssetsMissingError` names the missing file and the fix."""
    try:
        root = Path(str(resources.files("fastapi_offline").joinpath("static")))
    except ModuleNotFoundError as err:
        raise DocsAssetsMissingError(
            "the API docs need the fastapi-offline package: pip install 'fastapi-offline>=1.7'"
        ) from err
    for name in ASSET_FILES:
        if not (root / name).is_file():
            raise DocsAssetsMissingError(
                f"{root / name} is missing: reinstall with pip install --force-reinstall "
                "fastapi-offline"
            )
    return root


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` on ``app`` (created with ``docs_url=None,
    redoc_url=None``) with every script, style sheet and icon at `ASSETS_URL`, so the
    pages reference no other host."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
