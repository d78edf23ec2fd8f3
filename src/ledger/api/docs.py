"""The API's documentation pages, Swagger UI (`/docs`) and ReDoc (`/redoc`), served with
their scripts and styles from the application itself: the files come in a PyPI package
(`fastapi-offline`, pinned in pyproject.toml), so the pages work on a machine without
internet access and ask no other origin for anything (no CDN, no web fonts, no Swagger
validator badge). A Content-Security-Policy holds each page to its own origin besides, so
nothing a newer version of the files might fetch (ReDoc's bundle draws the Redocly logo from
its CDN) ever leaves the machine. Neither page is in the OpenAPI document, and neither needs
a token: they show only what `/openapi.json` says."""

from __future__ import annotations

import base64
import hashlib
import re
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
_INLINE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def policy(page: str) -> str:
    """The page's Content-Security-Policy: its own origin only (the inline start-up script
    by its hash; styles inline, as both libraries set them)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def held(page: HTMLResponse) -> HTMLResponse:
    """The page with its policy."""
    page.headers["Content-Security-Policy"] = policy(bytes(page.body).decode())
    return page


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
        return held(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} (Swagger UI)",
                swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS}/favicon.png",
                # No validator badge: it would send the document's address to another origin.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return held(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} (ReDoc)",
                redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in FILES:  # only the listed files: no path from the request reaches disk
            raise NotFound("no such file of the API's documentation")
        return FileResponse(folder / name, media_type=FILES[name], headers={"Cache-Control": CACHE})
