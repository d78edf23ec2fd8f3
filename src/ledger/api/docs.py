"""The API's documentation pages, Swagger UI (`/docs`) and ReDoc (`/redoc`), served with
their scripts and styles from the application itself: the files come in a PyPI package
(`fastapi-offline`, pinned in pyproject.toml), so the pages work on a machine without
internet access and ask no other origin for anything (no CDN, no web fonts, no Swagger
validator badge). Neither page is in the OpenAPI document, and neither needs a token: they
show only what `/openapi.json` says."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from ledger.errors import NotFound

ASSETS = "/docs/assets"
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
CACHE = "public, max-age=86400"  # the files change only with the package


def asset_dir() -> Path:
    """Where the installed package keeps the files."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their files to `app`."""
    folder = asset_dir()
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"the API docs' files are missing from {folder}: {missing}")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} (Swagger UI)",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # No validator badge: it would send the document's address to another origin.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} (ReDoc)",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in FILES:  # only the listed files: no path from the request reaches disk
            raise NotFound("no such file of the API's documentation")
        return FileResponse(folder / name, media_type=FILES[name], headers={"Cache-Control": CACHE})
