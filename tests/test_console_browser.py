"""The console in a real browser: headless Chromium (Debian's, driven by Playwright) against a
real `ledger serve` and two real `ledger console serve` processes, one per agency. The main
journey — intake, consent, referral, share, withdrawal — walked as a case worker of the
holder and checked as the recipient in a second browser context; axe-core on every page
(no serious or critical violation); the interface switched between Spanish and English.

Set LEDGER_SCREENSHOTS to a directory to keep a screenshot of each page there (the README's
come from `LEDGER_SCREENSHOTS=docs/screenshots`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.console.cli import open_accounts
from ledger.console.settings import ConsoleSettings
from tests.servers import Proc, deployment, free_port, register_agencies

CHROMIUM = "/usr/bin/chromium"
ARGS = [  # as root, and without the background connections this machine refuses
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "a long enough passphrase"
# The pages the README shows, kept under docs/screenshots.
SHOWN = {"login", "intake-es", "consent-form", "consents", "share-refused",
         "referrals-received", "withdraw-confirm", "disclosures", "disclosures-print"}  # fmt: skip


def browser_or_skip() -> Any:
    """Playwright on the system's Chromium; under CI a missing browser fails, never skips."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium at /usr/bin/chromium (make test installs Debian's)")
        pytest.skip("no Chromium at /usr/bin/chromium")
    return sync_playwright


@dataclass
class Desk:
    agency: str
    url: str
    proc: Proc


@contextmanager
def desks(backend: str, root: Path) -> Iterator[dict[str, Desk]]:
    """A real ledger on `backend` and one real console per agency (ngo-a, clinic)."""
    with deployment(backend, root / "ledger", workers=1, LEDGER_PROJECTIONS_IN_API="true") as dep:
        dep.start_server()
        creds = register_agencies(dep, ["ngo-a", "clinic"])
        made = {}
        for name, agency in creds.items():
            state = root / f"console-{name}"
            key_file = root / f"{name}.key"
            key_file.write_text(agency.key.line())
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
                "LEDGER_CONSOLE_LEDGER_URL": dep.url,
                "LEDGER_CONSOLE_AGENCY_KEY_FILE": str(key_file),
                "LEDGER_CONSOLE_STATE_DIR": str(state),
                "LEDGER_CONSOLE_PORT": str(port),
            }
            accounts = open_accounts(ConsoleSettings(state_dir=state))
            accounts.create("worker", "Case Worker", "caseworker", PASSWORD, agency.caseworker)
            accounts.close()
            proc = Proc([sys.executable, "-m", "ledger.cli", "console", "serve"], env,
                        root / f"console-{name}.log")  # fmt: skip
            proc.start()
            made[name] = Desk(name, f"http://127.0.0.1:{port}", proc)
        try:
            for desk in made.values():
                wait_for(desk)
            yield made
        finally:
            for desk in made.values():
                desk.proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Desk]]:
    """Every flow on SQLite."""
    with desks("sqlite", tmp_path_factory.mktemp("browser-sqlite")) as made:
        yield made


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Desk]]:
    """The main journey on PostgreSQL too."""
    with desks("postgres", tmp_path_factory.mktemp("browser-postgres")) as made:
        yield made


def wait_for(desk: Desk, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{desk.url}/login", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not desk.proc.alive:
            raise RuntimeError("the console exited:\n" + desk.proc.tail())
        time.sleep(0.1)
    raise RuntimeError("the console did not answer:\n" + desk.proc.tail())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"Chromium did not start: {exc}")
            pytest.skip(f"Chromium did not start: {exc}")
        yield launched
        launched.close()


class Visit:
    """One person's browser context on one console: pages, axe on each, screenshots."""

    def __init__(self, browser: Any, desk: Desk, lang: str = "en") -> None:
        self.desk, self.lang = desk, lang
        self.context = browser.new_context(locale=lang)
        self.page = self.context.new_page()
        self.shots = os.environ.get("LEDGER_SCREENSHOTS")

    def check(self, name: str) -> None:
        """No serious or critical axe-core violation on the page; a screenshot if asked."""
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        bad = [(v["id"], v["impact"], v["help"]) for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]  # fmt: skip
        assert bad == [], (name, bad)
        if self.shots and name in SHOWN:
            Path(self.shots).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(self.shots) / f"{name}.png"), full_page=True)

    def follow(self, selector: str) -> None:
        """Click a link or a form's button and wait for the page it leads to: reading the
        page before the navigation ends would read nothing."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def go(self, path: str, name: str) -> None:
        self.page.goto(self.desk.url + path)
        self.check(name)

    def login(self) -> None:
        self.go(f"/login?lang={self.lang}", "login")
        self.page.fill("#username", "worker")
        self.page.fill("#password", PASSWORD)
        self.follow("button[type=submit]")
        self.page.wait_for_url("**/cases")

    def close(self) -> None:
        self.context.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_main_journey_in_a_real_browser(
    browser: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    world = request.getfixturevalue("world" if backend == "sqlite" else "pg_world")
    holder = Visit(browser, world["ngo-a"], "en")
    clinic = Visit(browser, world["clinic"], "en")
    try:
        holder.login()
        # Spanish, then back to English: the person picks, the pages follow.
        holder.page.select_option("#lang", "es")
        holder.follow("header form[action='/language'] button")
        assert "Casos" in holder.page.content()
        holder.page.select_option("#lang", "en")
        holder.follow("header form[action='/language'] button")
        assert "Cases" in holder.page.content()
        holder.check("cases-empty")
        # Intake: an unknown age is explained on the form.
        holder.go("/cases/new", "intake")
        assert "treated as a child" in holder.page.content()
        holder.page.select_option("#age_band", "adult")
        holder.page.check("input[name=exploitation][value=labour]")
        holder.page.fill("#name", "MARKER-browser-1")
        holder.follow("main button[type=submit]")
        holder.page.wait_for_url(re.compile(r".*/cases/[0-9a-f-]{36}$"))
        case_id = holder.page.url.rsplit("/", 1)[1]
        holder.check("case")
        # Consent: naming the clinic, for referral and data sharing, identity and health.
        holder.go(f"/cases/{case_id}/consents/new", "consent-form")
        for purpose in ("referral", "data_sharing"):
            holder.page.check(f"input[name=purposes][value={purpose}]")
        for category in ("identity", "health"):
            holder.page.check(f"input[name=categories][value={category}]")
        holder.page.check("input[name=recipients][value=clinic]")
        holder.follow("main button[type=submit]")
        holder.page.wait_for_url(f"**/cases/{case_id}/consents")
        assert "in force" in holder.page.content()
        holder.check("consents")
        # A share the consent does not cover (location) is explained in plain words.
        holder.follow("text=Share data under this consent")
        holder.check("share-form")
        holder.page.select_option("#to", "clinic")
        holder.page.check("input[name=categories][value=location]")
        holder.follow("main button[type=submit]")
        assert "does not cover all the information" in holder.page.content()
        holder.check("share-refused")
        # The share it covers, then a referral.
        holder.go(f"/cases/{case_id}/consents", "consents")
        holder.follow("text=Share data under this consent")
        holder.page.select_option("#to", "clinic")
        holder.page.check("input[name=categories][value=identity]")
        holder.follow("main button[type=submit]")
        holder.page.wait_for_url(f"**/cases/{case_id}/disclosures")
        holder.check("disclosures")
        holder.go(f"/cases/{case_id}/consents", "consents")
        holder.follow("text=Make a referral under this consent")
        holder.check("referral-form")
        holder.page.select_option("#to", "clinic")
        holder.page.select_option("#component", "health_psychosocial")
        holder.page.check("input[name=categories][value=health]")
        holder.follow("main button[type=submit]")
        holder.page.wait_for_url("**/referrals")
        holder.check("referrals")
        # The clinic, in its own console: the referral to answer, the shared identity.
        clinic.login()
        clinic.go("/referrals", "referrals-received")
        assert case_id[:8] in clinic.page.content()
        clinic.follow("section.referral form[action$='/accept'] button")
        clinic.page.wait_for_url("**/referrals")
        clinic.go(f"/cases/{case_id}", "case-recipient")
        clinic.follow("main form button[type=submit]")
        assert "MARKER-browser-1" in clinic.page.content()
        clinic.check("case-opened")
        # Withdrawal, after a confirmation listing who loses access: the clinic's read is cut.
        holder.go(f"/cases/{case_id}/consents", "consents")
        holder.follow("section.consent form button[type=submit]")
        assert "clinic" in holder.page.content()
        holder.check("withdraw-confirm")
        holder.follow("main form button[type=submit]")
        holder.page.wait_for_url(f"**/cases/{case_id}/consents")
        assert "withdrawn on" in holder.page.content()
        clinic.go(f"/cases/{case_id}", "case-recipient")
        clinic.follow("main form button[type=submit]")
        assert "MARKER-browser-1" not in clinic.page.content()
        assert "No es posible" in clinic.page.content()  # the clinic's worker reads Spanish
        clinic.check("case-cut")
        # Nothing personal in either console's log.
        for desk in world.values():
            assert "MARKER-browser" not in desk.proc.tail(1_000_000)
    finally:
        holder.close()
        clinic.close()


def test_the_deadline_board_the_printouts_and_a_screen_left_idle_in_a_real_browser(
    browser: Any, world: dict[str, Desk]
) -> None:
    """The rest of the flows, on SQLite: an overdue referral on the board, declined with a
    reason by the receiver; the consent receipt and the disclosure register printed in the
    survivor's language; a screen left open that logs itself out."""
    holder = Visit(browser, world["ngo-a"], "en")
    clinic = Visit(browser, world["clinic"], "en")
    try:
        holder.login()
        holder.page.select_option("#lang", "en")
        holder.follow("header form[action='/language'] button")
        # Identified five days ago: health care was due within 24 hours of identification.
        holder.go("/cases/new", "intake")
        holder.page.select_option("#age_band", "adult")
        holder.page.check("input[name=exploitation][value=sexual]")
        five_days_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))
        holder.page.fill("#identified_at", five_days_ago)
        holder.follow("main button[type=submit]")
        case_id = holder.page.url.rsplit("/", 1)[1]
        holder.go(f"/cases/{case_id}/consents/new", "consent-form")
        for purpose in ("referral", "data_sharing"):
            holder.page.check(f"input[name=purposes][value={purpose}]")
        holder.page.check("input[name=categories][value=health]")
        holder.page.check("input[name=recipients][value=clinic]")
        holder.page.select_option("#language", "es")
        holder.follow("main button[type=submit]")
        # The receipt, in the consent's language (Spanish), printed.
        holder.follow("text=Receipt to print, in the consent's language")
        assert "Comprobante de consentimiento" in holder.page.content()
        printed = holder.page.pdf()
        assert printed.startswith(b"%PDF") and len(printed) > 1000
        pdf = holder.context.request.get(holder.page.url + "?format=pdf")
        assert pdf.ok and pdf.body().startswith(b"%PDF")
        # A referral made now is overdue already: marked in words on both boards.
        holder.go(f"/cases/{case_id}/consents", "consents")
        holder.follow("text=Make a referral under this consent")
        holder.page.select_option("#to", "clinic")
        holder.page.select_option("#component", "health_psychosocial")
        holder.page.check("input[name=categories][value=health]")
        holder.follow("main button[type=submit]")
        holder.page.wait_for_url("**/referrals")
        row = holder.page.locator(f"tbody tr:has-text('{case_id[:8]}')")
        assert "OVERDUE" in row.inner_text()
        holder.check("referrals-overdue")
        clinic.login()
        clinic.go("/referrals", "referrals-received")
        received = clinic.page.locator(f"section.referral:has-text('{case_id[:8]}')")
        assert "VENCIDA" in received.inner_text()  # the clinic's worker reads Spanish
        received.locator("select[name=reason]").select_option("no_capacity")
        with clinic.page.expect_navigation():
            received.locator("form[action$='/decline'] button").click()
        assert clinic.page.locator(f"section.referral:has-text('{case_id[:8]}')").count() == 0
        clinic.go("/notices", "notices")  # the inbox: the referral it was told of
        assert case_id[:8] in clinic.page.content()
        # The disclosure register, printed for the survivor in Spanish.
        holder.go(f"/cases/{case_id}/disclosures", "disclosures")
        holder.page.select_option("#print-lang", "es")
        holder.follow("form[action$='/disclosures/print'] button")
        assert "Quién ha visto o recibido su información" in holder.page.content()
        holder.check("disclosures-print")
        assert holder.page.pdf().startswith(b"%PDF")
        # A screen left open: after the idle time the page logs itself out, saying why.
        idle = holder.context.new_page()
        idle.clock.install()
        idle.goto(holder.desk.url + "/cases")
        assert "/cases" in idle.url
        with idle.expect_navigation():
            idle.clock.fast_forward("15:05")
        idle.wait_for_url("**/login?ended=idle&lang=en")
        assert "Your session ended after a time without use" in idle.content()
        idle.goto(holder.desk.url + "/cases")
        assert idle.url.endswith("/login")  # ended on the server too, not only on screen
    finally:
        holder.close()
        clinic.close()


def test_the_core_flows_need_no_javascript(browser: Any, world: dict[str, Desk]) -> None:
    """With JavaScript off, logging in and opening a case still work (forms only)."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(world["ngo-a"].url + "/login?lang=en")
        page.fill("#username", "worker")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("main button[type=submit]")
        page.wait_for_url("**/cases")
        page.goto(world["ngo-a"].url + "/cases/new")
        page.check("input[name=exploitation][value=other]")
        with page.expect_navigation():
            page.click("main button[type=submit]")
        page.wait_for_load_state()
        assert re.search(r"/cases/[0-9a-f-]{36}$", page.url), (page.url, page.content()[-600:])
    finally:
        context.close()


def test_pages_load_nothing_from_elsewhere(browser: Any, world: dict[str, Desk]) -> None:
    visit = Visit(browser, world["ngo-a"], "es")
    requested: list[str] = []
    visit.page.on("request", lambda r: requested.append(r.url))
    try:
        visit.login()
        visit.page.select_option("#lang", "es")
        visit.follow("header form[action='/language'] button")
        visit.go("/cases/new", "intake-es")
        assert requested and all(u.startswith(world["ngo-a"].url) for u in requested)
        assert "Abrir un caso" in visit.page.content()
    finally:
        visit.close()


def test_the_browser_runs_on_this_machine() -> None:
    """`make test` installs Debian's Chromium; say so plainly when it is missing."""
    browser_or_skip()
    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "Chromium" in out.stdout
