"""`/docs` (Swagger UI) and `/redoc` (ReDoc) in a real browser (issue 21): headless Chromium
against a real `ledger serve`, where every request to another origin is refused and fails
the test; both pages must render the API's own document from the application's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.servers import deployment
from tests.test_console_browser import ARGS, CHROMIUM, browser_or_skip


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_api_docs_render_offline_from_the_applications_own_files(
    backend: str, tmp_path: Path
) -> None:
    sync_playwright = browser_or_skip()
    with deployment(backend, tmp_path / "ledger", workers=1) as dep:
        dep.start_server()
        outside: list[str] = []
        served: list[str] = []
        errors: list[str] = []

        def only_the_app(route: Any) -> None:
            url = route.request.url
            if url.startswith(dep.url + "/") or url == dep.url:
                served.append(url.removeprefix(dep.url))
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                context = browser.new_context()
                context.route("**/*", only_the_app)
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("websocket", lambda ws: outside.append(ws.url))
                docs = page.goto(f"{dep.url}/docs", wait_until="networkidle")
                assert (
                    docs is not None
                    and "default-src 'self'" in docs.headers["content-security-policy"]
                )
                page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
                assert "Survivor Case Ledger" in page.inner_text(".swagger-ui .info .title")
                page.get_by_text("/v1/events:batch", exact=True).first.wait_for(timeout=30_000)
                assert page.locator(".opblock").count() >= 30  # every operation, drawn
                page.goto(f"{dep.url}/redoc", wait_until="networkidle")
                page.wait_for_selector("h1", timeout=30_000)
                assert "Survivor Case Ledger" in page.inner_text("h1")
                page.get_by_text("/v1/referrals").first.wait_for(state="attached", timeout=30_000)
            finally:
                browser.close()
        assert not outside, f"requests to other origins: {outside}"
        assert not errors, errors
        assets = {url.split("?")[0] for url in served if url.startswith("/docs/assets/")}
        assert assets >= {
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/docs/assets/redoc.standalone.js",
        }
        assert "/openapi.json" in served
