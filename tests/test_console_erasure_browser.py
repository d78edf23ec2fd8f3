"""Erasure by two people in a real browser: headless Chromium against a real `ledger serve`
and two real `ledger console serve` processes (the holder, and a clinic the case's data was
shared with). The supervisor who records the request is offered no confirmation, and a
confirmation forged in their browser is refused; a second supervisor reviews who will be
told and confirms with a fresh code; the receipt prints in the survivor's language; the case
then answers as erased in both consoles. axe-core on every page (no serious or critical
violation); a screenshot of each page in the test's tmp path (and in LEDGER_SCREENSHOTS, when
set)."""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from ledger.client import LedgerClient
from ledger.console.cli import open_accounts
from ledger.console.settings import ConsoleSettings
from tests.servers import Proc, deployment, free_port, register_agencies
from tests.test_console_browser import ARGS, CHROMIUM, PASSWORD, Desk, browser_or_skip, wait_for

CONSENT_ATTRS = {"language": "es", "interpreter": False, "notice_version": "2026-1"}
OPENED_ATTRS = {"age_band": "adult", "gender": "female", "exploitation": ["labour"],
                "identified_at": "2026-11-01"}  # fmt: skip


@dataclass
class World:
    desks: dict[str, Desk]
    secrets: dict[str, str]  # supervisor username -> TOTP secret
    ledger: LedgerClient  # the holder's caseworker, through the SDK: the scenario's set-up
    supervisor: LedgerClient  # a supervisor of the holder: to read the pending requests


@contextmanager
def erasure_world(root: Path) -> Iterator[World]:
    """A real ledger on SQLite; the holder's console with a caseworker and two supervisors,
    the clinic's with a caseworker."""
    with deployment("sqlite", root / "ledger", workers=1, LEDGER_PROJECTIONS_IN_API="true") as dep:
        dep.start_server()
        creds = register_agencies(dep, ["ngo-a", "clinic"])
        desks, totp = {}, {}
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
            if name == "ngo-a":
                for username, token in zip(("ana", "ben"), agency.supervisors, strict=True):
                    _, secret = accounts.create(username, username.title(), "supervisor",
                                                PASSWORD, token)  # fmt: skip
                    assert secret is not None
                    totp[username] = secret
            accounts.close()
            proc = Proc([sys.executable, "-m", "ledger.cli", "console", "serve"], env,
                        root / f"console-{name}.log")  # fmt: skip
            proc.start()
            desks[name] = Desk(name, f"http://127.0.0.1:{port}", proc)
        holder = creds["ngo-a"]
        sdk = LedgerClient(dep.url, holder.caseworker, holder.key)
        reader = LedgerClient(dep.url, holder.supervisors[0])
        try:
            for desk in desks.values():
                wait_for(desk)
            yield World(desks, totp, sdk, reader)
        finally:
            sdk.close()
            reader.close()
            for desk in desks.values():
                desk.proc.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with erasure_world(tmp_path_factory.mktemp("erasure-browser")) as made:
        yield made


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


class Person:
    """One person's browser on one console: axe on each page, and a screenshot of it."""

    def __init__(self, browser: Any, desk: Desk, shots: Path) -> None:
        self.desk, self.shots = desk, shots
        self.context = browser.new_context(locale="es")
        self.page = self.context.new_page()

    def check(self, name: str) -> None:
        """No serious or critical axe-core violation; a full-page screenshot."""
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        bad = [(v["id"], v["impact"], v["help"]) for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]  # fmt: skip
        assert bad == [], (name, bad)
        self.shot(name)

    def shot(self, name: str) -> None:
        for folder in (self.shots, os.environ.get("LEDGER_SCREENSHOTS")):
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                self.page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    def follow(self, selector: str) -> None:
        """Click and wait for the page it leads to (reading it mid-navigation reads nothing)."""
        with self.page.expect_navigation():
            self.page.click(selector)

    def go(self, path: str, name: str) -> None:
        self.page.goto(self.desk.url + path)
        self.check(name)

    def login(self, username: str, secret: str | None = None) -> None:
        self.page.goto(f"{self.desk.url}/login?lang=es")
        self.page.fill("#username", username)
        self.page.fill("#password", PASSWORD)
        if secret is not None:
            self.page.fill("#code", pyotp.TOTP(secret).now())
        self.follow("main button[type=submit]")
        self.page.wait_for_url("**/cases")

    def csrf(self) -> str:
        return str(self.page.locator("input[name=csrf]").first.get_attribute("value"))

    def close(self) -> None:
        self.context.close()


def fresh(secret: str) -> str:
    """The next 30-second step's code: later than any code a login just used (the console
    takes a neighbouring step, for clocks a little apart)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def shared_case(world: World) -> str:
    """A case of the holder whose identity was shared with the clinic under a consent."""
    case_id, consent_id = str(uuid.uuid4()), str(uuid.uuid4())
    sdk = world.ledger
    sdk.submit("case.opened", case_id, {"minor": False}, OPENED_ATTRS,
               {"identity": {"name": "MARKER-erasure-browser"}})  # fmt: skip
    sdk.submit("consent.granted", case_id, {
        "consent_id": consent_id, "purposes": ["data_sharing"], "recipients": ["clinic"],
        "categories": ["identity"], "expires_at": None, "given_by": "survivor",
        "child_assent": None, "assent_exempt": False}, CONSENT_ATTRS)  # fmt: skip
    sdk.submit("data.shared", case_id, {
        "share_id": str(uuid.uuid4()), "recipient": "clinic", "consent_id": consent_id,
        "purpose": "data_sharing", "categories": ["identity"]}, {})  # fmt: skip
    return case_id


def test_two_supervisors_erase_a_case_in_a_real_browser(
    browser: Any, world: World, tmp_path: Path
) -> None:
    case_id = shared_case(world)
    ana = Person(browser, world.desks["ngo-a"], tmp_path)
    ben = Person(browser, world.desks["ngo-a"], tmp_path)
    clinic = Person(browser, world.desks["clinic"], tmp_path)
    try:
        # The clinic holds a copy: it sees the case.
        clinic.login("worker")
        clinic.go(f"/cases/{case_id}", "clinic-case-before")
        assert case_id[:8] in clinic.page.content()
        # Ana records the survivor's request, from the case's page.
        ana.login("ana", world.secrets["ana"])
        ana.go(f"/cases/{case_id}", "case-supervisor")
        ana.follow(f"a[href='/cases/{case_id}/erasure']")
        ana.check("erasure-request")
        assert "¿Cómo llegó el pedido?" in ana.page.content()
        ana.page.check("input[name=reason][value=guardian_request]")
        ana.follow("main form button[type=submit]")
        ana.page.wait_for_url(f"**/cases/{case_id}/erasure")
        ana.check("erasure-requested")
        line = ana.page.locator("[role=status]").inner_text()
        assert "Otra persona supervisora de su agencia debe confirmarlo" in line
        # She is offered no confirmation, here or in the list.
        assert ana.page.locator("form[action$='/erasure/confirm'], input[name=code]").count() == 0
        ana.follow("nav a[href='/erasures']")
        ana.check("erasures-own")
        assert ana.page.locator(f"a[href='/cases/{case_id}/erasure']").count() == 0
        assert "Otra persona supervisora debe confirmarlo." in ana.page.content()
        # A confirmation forged in her browser (her session, her CSRF token, a fresh code).
        (request,) = [r for r in world.supervisor.erasure_requests() if r["case_id"] == case_id]
        forged = ana.context.request.post(
            f"{ana.desk.url}/cases/{case_id}/erasure/confirm",
            form={
                "csrf": ana.csrf(),
                "request_event_id": request["request_event_id"],
                "code": fresh(world.secrets["ana"]),
            },  # fmt: skip
            max_redirects=0,
        )
        assert forged.status == 403
        assert "otra persona supervisora debe confirmar el borrado" in forged.text()
        assert any(c["case_id"] == case_id for c in world.ledger.case_list())  # not erased
        # Ben, another supervisor: the list leads to the review.
        ben.login("ben", world.secrets["ben"])
        ben.follow("nav a[href='/erasures']")
        ben.check("erasures")
        ben.follow(f"a[href='/cases/{case_id}/erasure']")
        ben.check("erasure-review")
        review = ben.page.locator("main").inner_text()
        assert "Qué se va a borrar" in review and "CLINIC" in review
        assert review.index("Esto no se puede deshacer") < review.index("Borrar este caso para")
        assert "MARKER-erasure-browser" not in review
        ben.page.fill("#code", fresh(world.secrets["ben"]))
        ben.follow("form[action$='/erasure/confirm'] button[type=submit]")
        ben.page.wait_for_url(f"**/cases/{case_id}/erasure/receipt")
        ben.check("erasure-receipt")
        assert "Comprobante de borrado" in ben.page.content()
        # The survivor reads Portuguese: chosen on the page, then printed.
        ben.page.select_option("#receipt-lang", "pt")
        ben.follow("form[action$='/erasure/receipt'] button")
        ben.check("erasure-receipt-pt")
        assert "O que este comprovante prova" in ben.page.content()
        signed = ben.page.locator("pre.receipt").inner_text()
        assert signed.startswith("ledger erasure receipt v1\n") and f"case {case_id}" in signed
        ben.page.emulate_media(media="print")
        ben.shot("erasure-receipt-printed")
        assert not ben.page.locator("header").is_visible()
        assert not ben.page.locator("#receipt-lang").is_visible()
        assert ben.page.locator("pre.receipt").is_visible()
        assert ben.page.locator("article h2").first.inner_text() == "O que este comprovante prova"
        printed = ben.page.pdf()
        assert printed.startswith(b"%PDF") and len(printed) > 1000
        ben.page.emulate_media(media="screen")
        # The case now answers as erased in both consoles.
        ben.go(f"/cases/{case_id}", "case-erased-holder")
        assert "Este caso se borró el" in ben.page.content()
        assert not any(c["case_id"] == case_id for c in world.ledger.case_list())
        clinic.go("/notices", "notices-erased")
        row = clinic.page.locator("tbody tr", has_text=case_id[:8]).filter(has_text="suprimido")
        assert "REQUIERE ACCIÓN" in row.inner_text()
        with clinic.page.expect_navigation():
            row.locator(f"a[href='/cases/{case_id}']").click()
        clinic.check("case-erased-clinic")
        assert "Este caso se borró el" in clinic.page.content()
        assert re.search(r"Este caso se borró el \d{4}-\d{2}-\d{2}", clinic.page.content())
        # Nothing personal in either console's log.
        for desk in world.desks.values():
            assert "MARKER-erasure-browser" not in desk.proc.tail(1_000_000)
    finally:
        for person in (ana, ben, clinic):
            person.close()
