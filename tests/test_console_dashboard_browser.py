"""The supervisors' dashboard in a real browser: headless Chromium against a real `ledger
serve` and a real `ledger console serve`, a supervisor logged in with a second factor, the
charts drawn (SVG under the console's CSP: no inline style blocked), each with its table,
axe-core with no serious or critical violation, in Spanish.

With LEDGER_SCREENSHOTS set, the page is kept there as `dashboard.png` (the README's)."""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from ledger.client import LedgerClient
from ledger.console.cli import open_accounts
from ledger.console.settings import ConsoleSettings
from ledger.contract.vocabulary import format_timestamp
from tests.servers import Proc, deployment, free_port, register_agencies
from tests.test_console_browser import PASSWORD, Desk, Visit, browser, wait_for  # noqa: F401

OPENED = {"age_band": "adult", "gender": "female", "exploitation": ["labour"]}
CONSENT = {"language": "es", "interpreter": False, "notice_version": "2026-1"}


def seed(url: str, token: str, key: Any, today: str) -> None:
    """Six cases identified today: four with a health referral now (in time), one referred
    for housing and declined, one with nothing yet."""
    with LedgerClient(url, token, key) as ledger:
        for i in range(6):
            case_id = str(uuid.uuid4())
            ledger.submit("case.opened", case_id, {"minor": False},
                          OPENED | {"identified_at": today})  # fmt: skip
            if i == 5:
                continue
            consent_id = str(uuid.uuid4())
            ledger.submit("consent.granted", case_id, {
                "consent_id": consent_id, "purposes": ["referral"], "recipients": ["clinic"],
                "categories": ["identity"], "expires_at": None, "given_by": "survivor",
                "child_assent": None, "assent_exempt": False}, CONSENT)  # fmt: skip
            component = "housing" if i == 4 else "health_psychosocial"
            due = format_timestamp(datetime.now(UTC) + timedelta(hours=20))
            ledger.submit("referral.made", case_id, {
                "referral_id": str(uuid.uuid4()), "to": "clinic", "consent_id": consent_id,
                "categories": ["identity"]},
                {"component": component, "due_by": due, "urgency": "routine"})  # fmt: skip


def test_the_dashboard_in_a_real_browser(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    with deployment("sqlite", tmp_path / "ledger", workers=1,
                    LEDGER_PROJECTIONS_IN_API="true") as dep:  # fmt: skip
        dep.start_server()
        creds = register_agencies(dep, ["ngo-a", "clinic"])["ngo-a"]
        seed(dep.url, creds.caseworker, creds.key, datetime.now(UTC).strftime("%Y-%m-%d"))
        state, key_file, port = tmp_path / "console", tmp_path / "ngo-a.key", free_port()
        key_file.write_text(creds.key.line())
        accounts = open_accounts(ConsoleSettings(state_dir=state))
        _, secret = accounts.create("sup", "Supervisora", "supervisor", PASSWORD,
                                    creds.supervisors[0])  # fmt: skip
        accounts.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
            "LEDGER_CONSOLE_LEDGER_URL": dep.url, "LEDGER_CONSOLE_AGENCY_KEY_FILE": str(key_file),
            "LEDGER_CONSOLE_STATE_DIR": str(state), "LEDGER_CONSOLE_PORT": str(port),
        }  # fmt: skip
        proc = Proc([sys.executable, "-m", "ledger.cli", "console", "serve"], env,
                    tmp_path / "console.log")  # fmt: skip
        proc.start()
        desk = Desk("ngo-a", f"http://127.0.0.1:{port}", proc)
        try:
            wait_for(desk)
            visit = Visit(browser, desk, "es")
            visit.go("/login?lang=es", "login")
            visit.page.fill("#username", "sup")
            visit.page.fill("#password", PASSWORD)
            visit.page.fill("#code", pyotp.TOTP(secret).now())
            visit.follow("button[type=submit]")
            blocked: list[str] = []
            visit.page.on(
                "console", lambda m: blocked.append(m.text) if m.type == "error" else None
            )
            visit.go("/dashboard", "dashboard")
            page = visit.page
            assert page.locator("svg[role=img]").count() == 4
            assert "4 de 6 casos" in page.content()
            celerity = page.locator("section#celerity, section[aria-labelledby=h-celerity]")
            assert celerity.locator("table tbody tr").count() == 12  # a row per month
            box = page.locator("svg[role=img]").first.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100  # drawn
            assert not [m for m in blocked if "Content Security Policy" in m], blocked
            shots = os.environ.get("LEDGER_SCREENSHOTS")
            where = Path(shots) if shots else tmp_path
            where.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(where / "dashboard.png"), full_page=True)
            visit.close()
        finally:
            proc.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
