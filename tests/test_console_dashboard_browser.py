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


def seed(url: str, ngo: Any, clinic: Any) -> None:
    """Eighteen cases identified over the last six months, one in three with no care
    referral yet; those identified today referred in time, the older ones late; some
    declined by the clinic, one referral for housing each month."""
    now = datetime.now(UTC)
    with LedgerClient(url, ngo.caseworker, ngo.key) as ledger, \
            LedgerClient(url, clinic.caseworker, clinic.key) as answers:  # fmt: skip
        for i in range(18):
            case_id = str(uuid.uuid4())
            identified = (now - timedelta(days=30 * (i % 6))).strftime("%Y-%m-%d")
            ledger.submit("case.opened", case_id, {"minor": False},
                          OPENED | {"identified_at": identified})  # fmt: skip
            if i % 3 == 2:
                continue
            consent_id = str(uuid.uuid4())
            ledger.submit("consent.granted", case_id, {
                "consent_id": consent_id, "purposes": ["referral"], "recipients": ["clinic"],
                "categories": ["identity"], "expires_at": None, "given_by": "survivor",
                "child_assent": None, "assent_exempt": False}, CONSENT)  # fmt: skip
            for component in (
                ("health_psychosocial", "housing") if i < 6 else ("health_psychosocial",)
            ):
                referral_id = str(uuid.uuid4())
                due = format_timestamp(now + timedelta(hours=20))
                ledger.submit("referral.made", case_id, {
                    "referral_id": referral_id, "to": "clinic", "consent_id": consent_id,
                    "categories": ["identity"]},
                    {"component": component, "due_by": due, "urgency": "routine"})  # fmt: skip
                if i % 6 == 1:
                    answers.submit("referral.declined", case_id, {"referral_id": referral_id},
                                   {"reason": "no_capacity"})  # fmt: skip


def test_the_dashboard_in_a_real_browser(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    with deployment("sqlite", tmp_path / "ledger", workers=1,
                    LEDGER_PROJECTIONS_IN_API="true") as dep:  # fmt: skip
        dep.start_server()
        agencies = register_agencies(dep, ["ngo-a", "clinic"])
        creds = agencies["ngo-a"]
        seed(dep.url, creds, agencies["clinic"])
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
            # Identified today and referred at once: in time; identified 30 to 150 days ago
            # and referred now: late; one in three with no care referral yet.
            assert "3 de 18 casos" in page.content()
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
