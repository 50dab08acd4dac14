"""The browser pages, on the app's routes (``register(app, rt)``); served as files, no build step:

- ``GET /manager``      the manager view (``clients/web/manager.html``): live and recent calls,
  the server's health, call history search and per-card-kind Used/Dismiss rates
- ``GET /web/{name}``   the pages' scripts and style sheet (``clients/web/*.js``, ``*.css``)
- ``GET /docs``         the API docs (Swagger UI from the ``swagger-ui-bundle`` package)

``GET /`` (the rep's page) is ``server.app``'s. The pages and their assets carry no call data
and need no token: the data comes from the token-protected API, the token from the URL
fragment (``#token=…``, a viewer token: ``docs/api.md``, "Authentication"), which browsers
never send; the pages send it as ``Authorization: Bearer`` (REST) and as the
``Sec-WebSocket-Protocol`` bearer (sockets). Nothing is loaded from another host.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import swagger_ui_bundle
from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

if TYPE_CHECKING:  # server.app registers these routes
    from server.app import Runtime

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# the page's scripts load each other by path; a browser re-checks them on every load
CACHE = "no-cache"
# The API docs' Swagger UI, served from the swagger-ui-bundle package rather than a public CDN
# (FastAPI's default), so /docs works offline and loads nothing from another host.
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}


def web_dir() -> Traversable:
    return resources.files("clients").joinpath("web")


def asset(name: str) -> tuple[bytes, str] | None:
    """The body and media type of the web asset ``name`` (a plain file name in
    ``clients/web`` ending .js or .css), or None: no path, no other kind of file."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in MEDIA_TYPES or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = web_dir().joinpath(name)
    if not path.is_file():
        return None
    return path.read_bytes(), MEDIA_TYPES[suffix]


def register(app: FastAPI, rt: Runtime) -> None:
    del rt  # the pages are files; what they show comes from the API

    @app.get("/manager", response_class=HTMLResponse, include_in_schema=False)
    async def manager() -> HTMLResponse:
        body = web_dir().joinpath("manager.html").read_text()
        return HTMLResponse(body, headers={**SECURITY, "Cache-Control": CACHE})

    @app.get("/web/{name}", include_in_schema=False)
    async def web_asset(name: str) -> Response:
        found = asset(name)
        if found is None:
            raise HTTPException(404, f"no web asset {name!r}")
        body, media_type = found
        return Response(body, media_type=media_type, headers={**SECURITY, "Cache-Control": CACHE})

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            swagger_favicon_url="/docs/favicon-32x32.png",
        )

    @app.get("/docs/{name}", include_in_schema=False)
    async def api_docs_asset(name: str) -> Response:
        if name not in SWAGGER_FILES:
            raise HTTPException(404, f"no docs asset {name!r}")
        body = (Path(swagger_ui_bundle.swagger_ui_path) / name).read_bytes()
        return Response(body, media_type=SWAGGER_FILES[name], headers={"Cache-Control": CACHE})
