"""The agency console over HTTP, against a real ledger app: accounts and sessions (argon2id,
TOTP, idle and absolute timeouts, lock-out, a new session id at login, CSRF on every
state-changing request), the security headers, the case list and a logged case read through
the person's own token, and an agency that never sees another's cases."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from ledger.console.accounts import AccountError, Accounts, Policy
from ledger.console.app import create_app
from ledger.console.pages import HEADERS, SESSION_COOKIE, Console
from ledger.console.settings import ConsoleSettings
from ledger.contract import crypto
from tests.conftest import Agency, World

PASSWORD = "a long enough passphrase"


class Clock:
    """The console's clock, moved by hand (it starts now: TOTP codes are made for now)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Desk:
    """One agency's console, served through its real app."""

    agency: Agency
    accounts: Accounts
    clock: Clock
    http: TestClient

    def account(self, username: str, role: str = "caseworker") -> str | None:
        token = self.agency.world.token(role, self.agency.id)
        _, secret = self.accounts.create(username, username.title(), role, PASSWORD, token)
        return secret

    def login(self, username: str, password: str = PASSWORD, code: str = "") -> Any:
        page = self.http.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        form = {"username": username, "password": password, "code": code, "csrf": csrf[1]}
        return self.http.post("/login", data=form, follow_redirects=False)

    def confirm(self, secret: str | None, password: str = PASSWORD) -> Any:
        """A supervisor confirms it is them (password and a fresh code) before managing
        accounts."""
        self.clock.now += 30  # a new TOTP step: the login's code is used up
        code = pyotp.TOTP(secret).at(self.clock.now) if secret else ""
        form = {"csrf": self.csrf("/accounts"), "mine": password, "code": code}
        return self.http.post("/accounts/confirm", data=form, follow_redirects=False)

    def csrf(self, path: str = "/cases") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.http.get(path).text)
        assert found is not None
        return found[1]


def open_desk(world: World, agency_id: str, tmp_path: Path) -> Desk:
    agency = world.agency(agency_id)
    clock = Clock()
    accounts = Accounts(
        crypto.new_data_key(), tmp_path / f"{agency_id}.db", policy=Policy(), clock=clock
    )
    settings = ConsoleSettings(ledger_url="http://testserver", agency=agency_id)
    console = Console(settings, accounts, agency.key, transport=world.http._transport)
    http = TestClient(create_app(console), base_url="http://127.0.0.1")
    return Desk(agency, accounts, clock, http)


@pytest.fixture
def desk(world: World, tmp_path: Path) -> Iterator[Desk]:
    made = open_desk(world, "ngo-a", tmp_path)
    yield made
    made.accounts.close()


def test_a_caseworker_logs_in_sees_the_agency_cases_and_opens_one_logged(
    world: World, desk: Desk
) -> None:
    case_id = desk.agency.open_case(payload={"identity": {"name": "MARKER-console-1"}})
    desk.account("ana")
    r = desk.login("ana")
    assert r.status_code == 303 and r.headers["location"] == "/cases"
    cookie = r.cookies[SESSION_COOKIE]
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    listed = desk.http.get("/cases")
    assert listed.status_code == 200 and case_id[:8] in listed.text
    assert "MARKER-console-1" not in listed.text  # the list unseals nothing
    page = desk.http.get(f"/cases/{case_id}")
    assert "recorded in the ledger" in page.text or "registrado en el libro" in page.text
    size = world.ledger.store.log_size()
    opened = desk.http.post(f"/cases/{case_id}/open", data={"csrf": desk.csrf()})
    assert opened.status_code == 200 and "MARKER-console-1" in opened.text
    assert world.ledger.store.log_size() == size + 1  # the read is an access entry
    assert cookie and "MARKER-console-1" not in str(dict(opened.headers))


def test_the_case_list_comes_a_page_at_a_time(desk: Desk) -> None:
    from ledger.console.app import PAGE

    opened = [desk.agency.open_case() for _ in range(PAGE + 3)]
    desk.account("ana")
    desk.login("ana")
    first, second = desk.http.get("/cases").text, desk.http.get("/cases?page=2").text
    on_first = {c for c in opened if c[:8] in first}
    on_second = {c for c in opened if c[:8] in second}
    assert len(on_first) == PAGE and len(on_second) == 3 and not on_first & on_second
    assert "?page=2" in first and "?page=1" in second
    assert desk.http.get("/cases?page=99").status_code == 200  # the last page, not an error


def test_every_page_carries_the_security_headers(desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    for path in ("/login", "/cases", "/static/console.css"):
        r = desk.http.get(path)
        for name, value in HEADERS.items():
            assert r.headers[name] == value, (path, name)
    assert "frame-ancestors 'none'" in HEADERS["Content-Security-Policy"]
    policy = dict(d.strip().split(" ", 1) for d in HEADERS["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"  # the console's own file: nothing inline, no eval
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    script = desk.http.get("/static/idle.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_every_state_changing_request_needs_the_session_csrf_token(
    world: World, desk: Desk
) -> None:
    case_id = desk.agency.open_case()
    desk.account("ana", "supervisor")
    secret = desk.account("ben", "supervisor")
    assert secret is not None
    assert desk.login("ben", code=pyotp.TOTP(secret).now()).status_code == 303
    assert desk.confirm(secret).status_code == 303  # so a 403 below is the CSRF check's
    other = desk.accounts.list()[0].id
    size = world.ledger.store.log_size()
    for path, form in (
        (f"/cases/{case_id}/open", {}),
        ("/logout", {}),
        ("/accounts/confirm", {"mine": PASSWORD}),
        ("/accounts", {"username": "x", "token": "lgr_x"}),
        (
            "/password",
            {
                "current": PASSWORD,
                "new": "another long passphrase",
                "again": "another long passphrase",
            },
        ),
        ("/totp", {}),
        ("/language", {"lang": "en"}),
        (f"/accounts/{other}/disable", {}),
        (f"/accounts/{other}/enable", {"token": "lgr_x"}),
        (f"/accounts/{other}/reset", {"password": "another long passphrase"}),
    ):
        for csrf in (None, "forged", desk.csrf()[:-1] + "x"):
            data = form if csrf is None else {**form, "csrf": csrf}
            r = desk.http.post(path, data=data, follow_redirects=False)
            assert r.status_code == 403, (path, csrf, r.status_code)
    for forged in ({}, {"X-CSRF-Token": "forged"}):  # the page script's keep-alive
        assert desk.http.post("/alive", headers=forged).status_code == 403
    assert world.ledger.store.log_size() == size  # nothing was read
    assert not desk.accounts.get(other).disabled  # type: ignore[union-attr]
    assert desk.http.get("/cases").status_code == 200  # still logged in


def test_the_login_form_needs_its_own_csrf_token(desk: Desk) -> None:
    desk.account("ana")
    for forged in ("forged", "ñandú-token"):  # a non-ASCII one is refused too, not a 500
        form = {"username": "ana", "password": PASSWORD, "csrf": forged}
        r = desk.http.post("/login", data=form, follow_redirects=False)
        assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


def test_login_issues_a_new_session_id_and_logout_ends_it(desk: Desk) -> None:
    desk.account("ana")
    desk.http.cookies.set(SESSION_COOKIE, "planted-by-an-attacker")
    first = desk.login("ana").cookies[SESSION_COOKIE]
    assert first != "planted-by-an-attacker"
    desk.http.post("/logout", data={"csrf": desk.csrf()})
    assert desk.accounts.session(first) is None
    desk.http.cookies.set(SESSION_COOKIE, first)
    assert desk.http.get("/cases", follow_redirects=False).headers["location"] == "/login"
    second = desk.login("ana").cookies[SESSION_COOKIE]
    assert second != first


def test_a_session_ends_after_its_idle_time_and_its_absolute_time(desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    desk.clock.now += 14 * 60
    assert desk.http.get("/cases").status_code == 200  # used in time: the idle clock restarts
    desk.clock.now += 16 * 60
    assert desk.http.get("/cases", follow_redirects=False).status_code == 303
    desk.login("ana")
    logged_in = desk.clock.now
    for _ in range(40):  # used every 14 minutes, all day and beyond
        desk.clock.now += 14 * 60
        if desk.http.get("/cases", follow_redirects=False).status_code != 200:
            break
    else:
        raise AssertionError("the session outlived its absolute timeout")
    assert 8 * 3600 < desk.clock.now - logged_in <= 8 * 3600 + 14 * 60


def test_a_page_in_use_keeps_its_session_and_an_idle_one_logs_out_saying_why(desk: Desk) -> None:
    """What the page's script does: tells the server that a long form is being typed, and
    logs out after the idle time (its browser test runs the script itself)."""
    desk.account("ana")
    desk.login("ana")
    csrf = desk.csrf()
    for _ in range(3):  # 42 minutes of typing, told every 14: still in
        desk.clock.now += 14 * 60
        assert desk.http.post("/alive", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert desk.http.get("/cases").status_code == 200
    page = desk.http.get("/cases").text
    assert '<meta name="console-idle" content="900">' in page
    assert '<script src="/static/idle.js" defer></script>' in page
    r = desk.http.post("/logout", data={"csrf": csrf, "ended": "idle"}, follow_redirects=False)
    assert r.headers["location"] == "/login?ended=idle&lang=es"  # in the person's language
    assert desk.http.post("/alive", headers={"X-CSRF-Token": csrf}).status_code == 401
    told = desk.http.get("/login?ended=idle&lang=en").text
    assert "Your session ended after a time without use" in told
    assert "idle.js" not in told  # no script before anyone logs in


def test_failed_logins_lock_the_account_with_a_clear_message(desk: Desk) -> None:
    desk.account("ana")
    for _ in range(5):
        r = desk.login("ana", "a wrong passphrase!")
        assert r.status_code == 401 and "wrong" in r.text or "no son correctos" in r.text
    r = desk.login("ana")  # the right password, too late
    assert r.status_code == 401 and ("locked" in r.text or "bloqueada" in r.text)
    assert "15" in r.text
    desk.clock.now += 16 * 60
    assert desk.login("ana").status_code == 303


def test_an_unknown_username_answers_like_a_wrong_password(desk: Desk) -> None:
    desk.account("ana")
    wrong = desk.login("ana", "a wrong passphrase!")
    unknown = desk.login("nobody", "a wrong passphrase!")
    assert wrong.status_code == unknown.status_code == 401

    def without_token(page: str) -> str:
        return re.sub(r'name="csrf" value="[^"]+"', "", page)

    assert without_token(wrong.text) == without_token(unknown.text)


def test_a_supervisor_needs_a_current_second_factor(desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    assert desk.login("sup").status_code == 401
    assert desk.login("sup", code="000000").status_code == 401
    assert desk.login("sup", code=pyotp.TOTP(secret).now()).status_code == 303


def test_a_supervisor_disables_and_resets_accounts_and_a_caseworker_cannot(desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    desk.account("ana")
    ana = next(a for a in desk.accounts.list() if a.username == "ana")
    desk.login("ana")
    assert desk.http.get("/accounts").status_code == 403
    ana_session = desk.http.cookies[SESSION_COOKIE]
    desk.http.cookies.clear()
    desk.login("sup", code=pyotp.TOTP(secret).now())
    refused = desk.http.post(f"/accounts/{ana.id}/disable", data={"csrf": desk.csrf("/accounts")})
    assert refused.status_code == 403  # not confirmed yet: a session left open cannot do it
    assert not desk.accounts.get(ana.id).disabled  # type: ignore[union-attr]
    assert desk.confirm(secret, "a wrong passphrase!").status_code == 403
    assert desk.confirm(secret).status_code == 303
    ana_token = desk.accounts.ledger_token(ana)
    assert ledger_status(desk, ana_token) == 200
    r = desk.http.post(f"/accounts/{ana.id}/disable", data={"csrf": desk.csrf("/accounts")})
    assert r.status_code == 200 and "ana" in r.text  # back on the accounts page
    assert desk.accounts.session(ana_session) is None  # disabling ends its sessions
    assert desk.accounts.get(ana.id).disabled  # type: ignore[union-attr]
    assert ledger_status(desk, ana_token) == 401  # and her ledger token: the API refuses it too
    # Enabling again binds a new token (the old one is gone for good), checked as at creation.
    enable = f"/accounts/{ana.id}/enable"
    assert desk.http.post(enable, data={"csrf": desk.csrf("/accounts")}).status_code == 422
    stale = desk.http.post(enable, data={"csrf": desk.csrf("/accounts"), "token": ana_token})
    assert stale.status_code == 422 and "el ledger no acepta este token" in stale.text
    assert desk.accounts.get(ana.id).disabled  # type: ignore[union-attr]
    fresh = desk.agency.world.token("caseworker", desk.agency.id)
    ok = desk.http.post(enable, data={"csrf": desk.csrf("/accounts"), "token": fresh})
    assert ok.status_code == 200 and not desk.accounts.get(ana.id).disabled  # type: ignore[union-attr]
    assert desk.accounts.ledger_token(ana) == fresh
    short = desk.http.post(f"/accounts/{ana.id}/reset",
                           data={"csrf": desk.csrf("/accounts"), "password": "short"})  # fmt: skip
    assert short.status_code == 422


def ledger_status(desk: Desk, token: str) -> int:
    """What the ledger answers this token (200: it acts; 401: revoked)."""
    world = desk.agency.world
    return world.http.get(
        "/v1/tokens/self", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_an_account_is_bound_only_to_a_live_token_of_its_agency_and_role(
    world: World, desk: Desk
) -> None:
    world.agency("clinic")
    secret = desk.account("sup", "supervisor")
    desk.login("sup", code=pyotp.TOTP(secret).at(desk.clock.now))
    assert desk.confirm(secret).status_code == 303
    revoked = world.token("caseworker", "ngo-a")
    auth = {"Authorization": f"Bearer {revoked}"}
    revoked_id = world.http.get("/v1/tokens/self", headers=auth).json()["id"]
    assert (
        world.http.delete(f"/v1/tokens/{revoked_id}", headers=world.admin_auth).status_code == 204
    )
    for token, said in (
        (world.token("caseworker", "clinic"), "no es de esta agencia"),  # the account's Spanish
        (world.token("supervisor", "ngo-a"), "es de rol supervisor"),
        (revoked, "no acepta este token"),
    ):
        form = {"csrf": desk.csrf("/accounts"), "username": "new.worker", "name": "New",
                "role": "caseworker", "language": "en", "token": token}  # fmt: skip
        refused = desk.http.post("/accounts", data=form)
        assert refused.status_code == 422 and said in refused.text, said
        assert token not in refused.text
    assert [a.username for a in desk.accounts.list()] == ["sup"]


def test_the_forms_offer_the_registered_agencies_as_recipients(world: World, desk: Desk) -> None:
    world.agency("clinic")
    world.agency("legal-aid")
    gone = world.agency("closed-ngo")
    world.http.delete(f"/v1/agencies/{gone.id}", headers=world.admin_auth)
    desk.account("ana")
    desk.login("ana")
    case_id = intake(desk)
    consent = str(uuid.uuid4())
    for path in (f"/cases/{case_id}/consents/new", f"/cases/{case_id}/share?consent={consent}",
                 f"/cases/{case_id}/referrals/new?consent={consent}"):  # fmt: skip
        page = desk.http.get(path).text
        offered = set(re.findall(r'(?:name="recipients"|<option) value="([a-z0-9-]+)"', page))
        assert {"clinic", "legal-aid"} <= offered, path
        assert "ngo-a" not in offered and "closed-ngo" not in offered, path


def test_an_agency_never_sees_another_agency_cases_through_its_console(
    world: World, desk: Desk, tmp_path: Path
) -> None:
    other = open_desk(world, "clinic", tmp_path)
    try:
        case_id = desk.agency.open_case(payload={"identity": {"name": "MARKER-console-2"}})
        other.account("carla")
        other.login("carla")
        assert case_id[:8] not in other.http.get("/cases").text
        assert other.http.get(f"/cases/{case_id}").status_code == 404
        opened = other.http.post(f"/cases/{case_id}/open", data={"csrf": other.csrf()})
        assert opened.status_code == 404 and "MARKER-console-2" not in opened.text
        assert other.http.get(f"/cases/{uuid.uuid4()}").status_code == 404
    finally:
        other.accounts.close()


def test_the_store_keeps_no_secret_in_the_clear(desk: Desk, tmp_path: Path) -> None:
    secret = desk.account("sup", "supervisor")
    token = desk.agency.world.token("caseworker", desk.agency.id)
    desk.accounts.create("ana", "Ana", "caseworker", PASSWORD, token)
    session_id = desk.login("ana").cookies[SESSION_COOKIE]
    desk.accounts.db.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ngo-a.db*"))
    for needle in (PASSWORD, token, str(secret), session_id):
        assert needle.encode() not in stored


def test_the_interface_speaks_spanish_and_english(desk: Desk) -> None:
    assert "Iniciar sesión" in desk.http.get("/login?lang=es").text
    assert "Log in" in desk.http.get("/login?lang=en").text
    desk.account("ana")
    desk.login("ana")
    assert "Casos" in desk.http.get("/cases").text  # new accounts default to Spanish
    desk.http.post("/language", data={"csrf": desk.csrf(), "lang": "en"})
    assert "Cases" in desk.http.get("/cases").text


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_account_store_on_both_backends(store: str, tmp_path: Path) -> None:
    """Accounts, logins, sessions and their refusals on SQLite and on PostgreSQL."""
    url = None
    if store == "postgres":
        import psycopg

        from tests.conftest import require_postgres

        base, schema = require_postgres(), f"console_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    clock = Clock()
    accounts = Accounts(crypto.new_data_key(), tmp_path / "c.db", url, Policy(), clock)
    try:
        account, secret = accounts.create("Ana.Lopez", "Ana", "caseworker", PASSWORD, "lgr_t")
        assert secret is None and account.username == "ana.lopez"
        for bad in (("ana.lopez", "Ana", "caseworker", PASSWORD, "lgr_t"),  # taken
                    ("ben", "Ben", "admin", PASSWORD, "lgr_t"),  # not an agency role
                    ("ben", "Ben", "caseworker", "short", "lgr_t"),  # too short
                    ("b n!", "Ben", "caseworker", PASSWORD, "lgr_t")):  # fmt: skip
            with pytest.raises(AccountError):
                accounts.create(*bad)
        assert accounts.ledger_token(account) == "lgr_t"
        session_id, session = accounts.login("ana.lopez", PASSWORD, None)
        assert accounts.session(session_id) is not None
        accounts.set_disabled(account.id, True)
        assert accounts.session(session_id) is None
        with pytest.raises(AccountError, match="disabled"):
            accounts.login("ana.lopez", PASSWORD, None)
        with pytest.raises(AccountError, match="wrong"):
            accounts.login("ana.lopez", "a wrong passphrase!", None)  # before saying disabled
    finally:
        accounts.close()
        if url is not None:
            import psycopg

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_console_logs_no_personal_data_passwords_or_tokens(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    case_id = desk.agency.open_case(payload={"identity": {"name": "MARKER-console-3"}})
    desk.account("ana")
    token = desk.accounts.ledger_token(desk.accounts.list()[0])
    desk.login("ana", "a wrong passphrase!")
    session_id = desk.login("ana").cookies[SESSION_COOKIE]
    desk.http.post(f"/cases/{case_id}/open", data={"csrf": desk.csrf()})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "console sealed data read" in logged  # the log is there, without what it must not hold
    for needle in ("MARKER-console-3", PASSWORD, "a wrong passphrase!", token, session_id, "ana"):
        assert needle not in logged


# -- case work: intake, consent, withdrawal -------------------------------------------------------


def intake(desk: Desk, **fields: str) -> str:
    form = {"csrf": desk.csrf("/cases/new"), "age_band": "adult", "gender": "female",
            "exploitation": "labour", "identified_at": "2026-11-30", **fields}  # fmt: skip
    r = desk.http.post("/cases/new", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    return str(r.headers["location"]).rsplit("/", 1)[1]


def record_consent(desk: Desk, case_id: str, recipients: str, **fields: Any) -> Any:
    form = {"csrf": desk.csrf(f"/cases/{case_id}/consents/new"), "recipients": recipients,
            "purposes": ["assistance", "data_sharing"], "categories": ["identity", "health"],
            "given_by": "survivor", "child_assent": "", "language": "es",
            "interpreter": "yes", **fields}  # fmt: skip
    return desk.http.post(f"/cases/{case_id}/consents/new", data=form, follow_redirects=False)


def test_intake_opens_a_case_signed_by_the_agency_and_sealed(world: World, desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    size = world.ledger.store.log_size()
    case_id = intake(desk, name="MARKER-console-4", phone="+000 MARKER-console-5")
    ((_, raw),) = world.ledger.store.entries(size, size + 1)
    entry = json.loads(raw)
    assert entry["envelope"]["type"] == "case.opened" and entry["envelope"]["case_id"] == case_id
    assert entry["envelope"]["agency"] == "ngo-a"
    assert entry["envelope"]["facts"] == {"minor": False}
    assert b"MARKER-console" not in raw  # sealed: the log holds ciphertext only
    ana = next(a for a in desk.accounts.list() if a.username == "ana")
    token_id = world.ledger.authenticate(desk.accounts.ledger_token(ana)).token_id
    assert entry["actor"] == token_id  # the ledger's record names the person who acted
    assert case_id[:8] in desk.http.get("/cases").text


def test_an_intake_without_a_form_of_exploitation_is_refused_in_words(desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    form = {"csrf": desk.csrf("/cases/new"), "age_band": "adult", "gender": "female",
            "identified_at": "2026-11-30"}  # fmt: skip
    r = desk.http.post("/cases/new", data=form)
    assert r.status_code == 422 and ("at least one" in r.text or "al menos una" in r.text)


def test_an_unknown_age_opens_a_case_treated_as_a_minor(world: World, desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    form_page = desk.http.get("/cases/new").text
    assert "treated as a child" in form_page or "trata como" in form_page or "tratada" in form_page
    case_id = intake(desk, age_band="unknown")
    case = world.ledger.cases.load(case_id)
    assert case is not None and case.state.minor


def test_a_consent_recorded_then_withdrawn_cuts_the_recipient_reads(
    world: World, desk: Desk, tmp_path: Path
) -> None:
    clinic = open_desk(world, "clinic", tmp_path)
    try:
        desk.account("ana")
        desk.login("ana")
        case_id = intake(desk, name="MARKER-console-6")
        assert record_consent(desk, case_id, "clinic").status_code == 303
        register = desk.http.get(f"/cases/{case_id}/consents")
        assert "clinic" in register.text
        state = world.ledger.cases.load(case_id).state  # type: ignore[union-attr]
        (consent_id,) = state.consents
        # The holder shares identity with the clinic under it (the share page comes later).
        shared = desk.agency.share(case_id, "clinic", consent_id, ["identity"])
        assert shared.status_code == 201, shared.text
        clinic.account("carla")
        clinic.login("carla")
        seen = clinic.http.post(f"/cases/{case_id}/open", data={"csrf": clinic.csrf()})
        assert seen.status_code == 200 and "MARKER-console-6" in seen.text

        # Withdrawal: the first step lists who loses access and withdraws nothing.
        def withdrawn() -> bool:
            case = world.ledger.cases.load(case_id)
            return case is not None and case.state.consents[consent_id].withdrawn

        url = f"/cases/{case_id}/consents/{consent_id}/withdraw"
        ask = desk.http.post(url, data={"csrf": desk.csrf(), "reason": "survivor_request"})
        assert ask.status_code == 200 and "clinic" in ask.text and not withdrawn()
        done = desk.http.post(url, data={"csrf": desk.csrf(), "reason": "survivor_request",
                                         "confirmed": "yes"}, follow_redirects=False)  # fmt: skip
        assert done.status_code == 303 and withdrawn()
        cut = clinic.http.post(f"/cases/{case_id}/open", data={"csrf": clinic.csrf()})
        assert cut.status_code == 403 and "MARKER-console-6" not in cut.text  # cut at once
        # The clinic is told, and confirms in the log from its inbox what it did.
        inbox = clinic.http.get("/notices").text
        assert "REQUIERE ACCIÓN" in inbox
        (position,) = [n.position for n in world.ledger.store.notices("clinic", 0, 100)
                       if n.kind == "consent.withdrawn"]  # fmt: skip
        acknowledge = f"/notices/{case_id}/{position}/acknowledge"
        assert f'action="{acknowledge}"' in inbox
        form = {"csrf": clinic.csrf(), "kind": "consent.withdrawn", "action": "deleted",
                "legal_basis": "court_order"}  # fmt: skip
        sent = clinic.http.post(acknowledge, data=form, follow_redirects=False)
        assert sent.status_code == 303, sent.text
        after = clinic.http.get("/notices").text
        assert "Confirmado:" in after and "lo borramos" in after
        assert f'action="{acknowledge}"' not in after
        acks = world.ledger.cases.load(case_id).state.acknowledged  # type: ignore[union-attr]
        assert acks[position, "clinic"][0] == "deleted"
        again = clinic.http.post(acknowledge, data={**form, "csrf": clinic.csrf()})
        assert again.status_code == 409  # once, in words
        register = desk.http.get(f"/cases/{case_id}/disclosures").text
        row = r"<tr><td>clinic</td><td>2</td><td>0</td><td>1</td>\s*<td>0</td></tr>"
        assert re.search(row, register)  # told twice, no webhook, one confirmed, none awaiting
    finally:
        clinic.accounts.close()


def test_the_consent_receipt_prints_in_the_consent_language(world: World, desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    case_id = intake(desk, name="MARKER-console-7")
    assert record_consent(desk, case_id, "ngo-a", language="es").status_code == 303
    (consent_id,) = world.ledger.cases.load(case_id).state.consents  # type: ignore[union-attr]
    size = world.ledger.store.log_size()
    assert f"/consents/{consent_id}/receipt" in desk.http.get(f"/cases/{case_id}/consents").text
    assert world.ledger.store.log_size() == size  # the register unseals nothing: no read
    html = desk.http.get(f"/cases/{case_id}/consents/{consent_id}/receipt")
    assert html.status_code == 200 and "Comprobante de consentimiento" in html.text
    assert "MARKER-console-7" not in html.text and case_id not in html.text  # safe to carry
    assert "script" not in html.headers["content-security-policy"]
    pdf = desk.http.get(f"/cases/{case_id}/consents/{consent_id}/receipt?format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert desk.http.get(f"/cases/{case_id}/consents/{consent_id}/receipt?format=note"
                         ).status_code == 404  # fmt: skip


def test_a_refused_consent_is_explained_not_a_bare_status(world: World, desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    case_id = intake(desk)
    size = world.ledger.store.log_size()
    r = record_consent(desk, case_id, "clinic-nort")  # not registered (or removed since)
    assert r.status_code == 422
    assert "refused" in r.text or "rechaz" in r.text
    assert "registered" in r.text  # the ledger's own reason, shown
    assert world.ledger.store.log_size() == size


def test_every_text_of_the_pages_is_in_spanish_portuguese_and_french() -> None:
    """The catalogues keep up with the pages: each literal `_("...")` in a template and each
    plain-words message of the console has an entry in each of them."""
    from ledger.console.i18n import translations

    root = Path(__file__).resolve().parent.parent / "src" / "ledger" / "console"
    texts: set[str] = set()
    for template in (root / "templates").glob("*.j2"):
        texts.update(re.findall(r'_\("([^"]+)"\)', template.read_text()))
    for module in ("app.py", "pages.py", "casework.py", "accounts.py", "referrals.py"):
        source = (root / module).read_text()
        texts.update(re.findall(r'(?:message(?:=| = )|AccountError\()"([^"]+)"', source))
    from ledger.console.pages import EXPLAINED

    texts.update(text for _, why, fix in EXPLAINED for text in (why, fix))
    from babel.messages.pofile import read_po

    assert texts
    for language in ("es", "pt", "fr"):
        with (root / "locales" / language / "LC_MESSAGES" / "console.po").open("rb") as f:
            catalog = read_po(f)
        translated = translations(language)
        missing = sorted(t for t in texts if t not in catalog or not translated.gettext(t))
        assert missing == [], language


# -- referrals, sharing, disclosures -------------------------------------------------------------


def consent_in_force(world: World, desk: Desk, case_id: str, recipients: str) -> str:
    assert (
        record_consent(desk, case_id, recipients, purposes=["referral", "data_sharing"]).status_code
        == 303
    )
    state = world.ledger.cases.load(case_id).state  # type: ignore[union-attr]
    return next(iter(state.consents))


def refer(desk: Desk, case_id: str, consent_id: str, to: str = "clinic") -> None:
    form = {"csrf": desk.csrf(f"/cases/{case_id}/referrals/new"), "to": to,
            "component": "health_psychosocial", "urgency": "urgent",
            "consent_id": consent_id, "categories": ["health"]}  # fmt: skip
    r = desk.http.post(f"/cases/{case_id}/referrals/new", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_a_referral_is_made_answered_and_overdue_ones_are_marked_in_words(
    world: World, desk: Desk, tmp_path: Path
) -> None:
    clinic = open_desk(world, "clinic", tmp_path)
    try:
        desk.account("ana")
        desk.login("ana")
        today = world.clock.now.strftime("%Y-%m-%d")
        fresh = intake(desk, identified_at=today)
        refer(desk, fresh, consent_in_force(world, desk, fresh, "clinic"))
        # Identified five days ago: health care was due within 24 hours of identification.
        late = intake(
            desk, identified_at=(world.clock.now - timedelta(days=5)).strftime("%Y-%m-%d")
        )
        refer(desk, late, consent_in_force(world, desk, late, "clinic"))
        clinic.account("carla")
        clinic.login("carla")
        board = clinic.http.get("/referrals").text
        rows = {
            case_id: re.search(rf"{case_id[:8]}.*?</(?:p|tr)>", board, re.S)
            for case_id in (fresh, late)
        }
        assert rows[fresh] is not None and rows[late] is not None
        assert "OVERDUE" not in rows[fresh][0] and "VENCIDA" not in rows[fresh][0]
        assert "OVERDUE" in rows[late][0] or "VENCIDA" in rows[late][0]
        state = world.ledger.cases.load(fresh).state  # type: ignore[union-attr]
        (referral_id,) = state.referrals
        for action in ("accept", "complete"):
            r = clinic.http.post(f"/referrals/{fresh}/{referral_id}/{action}",
                                 data={"csrf": clinic.csrf("/referrals")},
                                 follow_redirects=False)  # fmt: skip
            assert r.status_code == 303, r.text
        state = world.ledger.cases.load(fresh).state  # type: ignore[union-attr]
        assert state.referrals[referral_id].status == "completed"
        # The holder's console cannot answer a referral it made: the ledger refuses, in words.
        (late_referral,) = world.ledger.cases.load(late).state.referrals  # type: ignore[union-attr]
        r = desk.http.post(f"/referrals/{late}/{late_referral}/accept", data={"csrf": desk.csrf()})
        assert r.status_code == 403 and "refused" in r.text or "rechaz" in r.text
    finally:
        clinic.accounts.close()


def test_a_refused_share_says_why_in_plain_words_and_what_would_allow_it(
    world: World, desk: Desk
) -> None:
    world.agency("clinic")
    world.agency("legal-aid")
    desk.account("ana")
    desk.login("ana")
    case_id = intake(desk)
    consent_id = consent_in_force(world, desk, case_id, "clinic")
    size = world.ledger.store.log_size()
    page = desk.http.get(f"/cases/{case_id}/share?consent={consent_id}")
    assert f'value="{consent_id}"' in page.text  # chosen in the register, carried by its link
    assert world.ledger.store.log_size() == size  # opening the form reads nothing: no entry
    form = {"csrf": desk.csrf(f"/cases/{case_id}/share"), "to": "legal-aid",
            "consent_id": consent_id, "categories": ["identity"]}  # fmt: skip
    r = desk.http.post(f"/cases/{case_id}/share", data=form)
    assert r.status_code == 403
    assert "does not name that agency" in r.text or "no nombra a esa agencia" in r.text
    assert "What would make it possible" in r.text or "Qué lo haría posible" in r.text
    assert world.ledger.store.log_size() == size  # nothing recorded
    ok = desk.http.post(f"/cases/{case_id}/share", data={**form, "to": "clinic",
                                                          "csrf": desk.csrf()})  # fmt: skip
    assert ok.status_code == 200  # followed to the disclosure register
    assert "clinic" in ok.text


def test_the_disclosure_register_prints_for_the_survivor_in_their_language(
    world: World, desk: Desk
) -> None:
    world.agency("clinic")
    desk.account("ana")
    desk.login("ana")
    case_id = intake(desk, name="MARKER-console-9")
    consent_id = consent_in_force(world, desk, case_id, "clinic")
    form = {"csrf": desk.csrf(f"/cases/{case_id}/share"), "to": "clinic",
            "consent_id": consent_id, "categories": ["identity"]}  # fmt: skip
    assert desk.http.post(f"/cases/{case_id}/share", data=form).status_code == 200
    register = desk.http.get(f"/cases/{case_id}/disclosures").text
    assert f'action="/cases/{case_id}/disclosures/print"' in register
    # Who the ledger told (the share told the clinic), delivered nowhere (no endpoint), and
    # nothing yet to confirm: told / delivered / confirmed / awaiting, in Spanish.
    assert "A quién se avisó, y quién lo confirmó" in register
    assert "<tr><td>clinic</td><td>1</td><td>0</td><td>0</td>" in register
    for lang, said in (("fr", "Qui a vu ou reçu vos informations"),
                       ("en", "Who has seen or received your information")):  # fmt: skip
        page = desk.http.get(f"/cases/{case_id}/disclosures/print?lang={lang}")
        assert page.status_code == 200 and f'<html lang="{lang}">' in page.text
        assert said in page.text
        assert "CLINIC" in page.text  # the agency by its registered name
        assert "MARKER-console-9" not in page.text
        body = page.text.split("<article", 1)[1].split("</article>", 1)[0]
        assert case_id not in body  # safe to carry: no case id on the printed part
    assert desk.http.get(f"/cases/{uuid.uuid4()}/disclosures/print").status_code == 404


def test_the_inbox_shows_what_the_ledger_told_the_agency_in_its_words(
    world: World, desk: Desk, tmp_path: Path
) -> None:
    from ledger.contract.notices import ASKS

    clinic = open_desk(world, "clinic", tmp_path)
    try:
        desk.account("ana")
        desk.login("ana")
        case_id = intake(desk)
        refer(desk, case_id, consent_in_force(world, desk, case_id, "clinic"))
        clinic.account("carla")
        clinic.login("carla")
        inbox = clinic.http.get("/notices")
        assert inbox.text.count("<tr><td>") == 1  # the referral, nothing else
        assert inbox.status_code == 200 and "derivación recibida" in inbox.text
        assert f'href="/cases/{case_id}"' in inbox.text
        for language in ("es", "pt", "fr"):  # every kind and ask has its words
            from ledger.console.i18n import translations

            words = translations(language)
            for kind, ask in ASKS.items():
                assert words.gettext(f"notice {kind}") != f"notice {kind}", (language, kind)
                assert words.gettext(ask) != ask, (language, ask)
        assert "Todavía no hay avisos." in desk.http.get("/notices").text  # told of nothing
    finally:
        clinic.accounts.close()


# -- from the security review --------------------------------------------------------------------


def test_concurrent_guesses_cannot_get_past_the_lock_out(desk: Desk) -> None:
    """Each attempt is counted before its password is checked: 20 guesses at once use up
    the 5 allowed, and the right password is then refused too."""
    import threading

    desk.account("ana")
    barrier, refused = threading.Barrier(20), []

    def guess() -> None:
        barrier.wait()
        try:
            desk.accounts.login("ana", "a wrong passphrase!", None)
        except AccountError as exc:
            refused.append(exc.message)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == 20
    with pytest.raises(AccountError, match="locked"):
        desk.accounts.login("ana", PASSWORD, None)


def test_a_totp_code_is_accepted_once(desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    code = pyotp.TOTP(secret).at(desk.clock.now)
    desk.accounts.login("sup", PASSWORD, code)
    with pytest.raises(AccountError):
        desk.accounts.login("sup", PASSWORD, code)  # seen over a shoulder: refused


def test_a_reset_password_must_be_changed_before_anything_else(desk: Desk) -> None:
    desk.account("ana")
    ana = desk.accounts.list()[0]
    desk.accounts.reset_password(ana.id, "a reset passphrase!!")
    r = desk.login("ana", "a reset passphrase!!")
    assert r.status_code == 303 and r.headers["location"] == "/password"
    assert desk.http.get("/cases", follow_redirects=False).headers["location"] == "/password"
    form = {"csrf": desk.csrf("/password"), "current": "a reset passphrase!!",
            "new": "my own passphrase 1", "again": "my own passphrase 1"}  # fmt: skip
    assert desk.http.post("/password", data=form, follow_redirects=False).status_code == 303
    assert desk.http.get("/cases").status_code == 200


def test_a_supervisor_cannot_disable_or_reset_their_own_account(desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    desk.login("sup", code=pyotp.TOTP(secret).at(desk.clock.now))
    assert desk.confirm(secret).status_code == 303
    me = desk.accounts.list()[0]
    r = desk.http.post(f"/accounts/{me.id}/disable", data={"csrf": desk.csrf("/accounts")})
    assert r.status_code == 403 and not desk.accounts.get(me.id).disabled  # type: ignore[union-attr]


def test_logging_in_on_a_shared_browser_ends_the_previous_person_session(desk: Desk) -> None:
    desk.account("ana")
    desk.account("ben")
    first = desk.login("ana").cookies[SESSION_COOKIE]
    desk.login("ben")  # the same browser: ana forgot to log out
    assert desk.accounts.session(first) is None


def test_the_console_answers_only_to_its_own_host_names(desk: Desk) -> None:
    assert desk.http.get("/login", headers={"Host": "attacker.example"}).status_code == 400
    assert desk.http.get("/login").status_code == 200


def test_a_supervisor_opens_a_colleague_account_shown_once(world: World, desk: Desk) -> None:
    secret = desk.account("sup", "supervisor")
    assert secret is not None
    desk.login("sup", code=pyotp.TOTP(secret).at(desk.clock.now))
    assert desk.confirm(secret).status_code == 303
    token = world.token("caseworker", "ngo-a")
    form = {"csrf": desk.csrf("/accounts"), "username": "new.worker", "name": "New Worker",
            "role": "caseworker", "language": "en", "token": token}  # fmt: skip
    shown = desk.http.post("/accounts", data=form)
    assert shown.status_code == 200
    found = re.search(r"<code>([^<]+)</code>", shown.text)
    assert found is not None
    assert token not in shown.text  # the token is never shown back
    bad = desk.http.post("/accounts", data={**form, "username": "x2", "token": "not a token",
                                            "csrf": desk.csrf("/accounts")})  # fmt: skip
    assert bad.status_code == 422
    desk.http.cookies.clear()
    r = desk.login("new.worker", found[1])
    assert r.headers["location"] == "/password"  # a one-time password


def test_anyone_may_add_a_second_factor(desk: Desk) -> None:
    desk.account("ana")
    desk.login("ana")
    page = desk.http.post("/totp", data={"csrf": desk.csrf()})
    secret = re.search(r"<code>([A-Z2-7]+)</code>", page.text)
    assert secret is not None
    wrong = desk.http.post("/totp", data={"csrf": desk.csrf(), "step": "confirm", "code": "000000"})
    assert wrong.status_code == 422
    code = pyotp.TOTP(secret[1]).at(desk.clock.now)
    ok = desk.http.post("/totp", data={"csrf": desk.csrf(), "step": "confirm", "code": code},
                        follow_redirects=False)  # fmt: skip
    assert ok.status_code == 303
    desk.http.cookies.clear()
    assert desk.login("ana").status_code == 401  # the password alone no longer opens it
    desk.clock.now += 30  # the next step: a new code
    later = pyotp.TOTP(secret[1]).at(desk.clock.now)
    assert desk.login("ana", code=later).status_code == 303


def test_the_sealing_key_can_live_outside_the_store(tmp_path: Path) -> None:
    from ledger.console.cli import open_accounts

    settings = ConsoleSettings(state_dir=tmp_path / "state", key_file=tmp_path / "secret" / "k")
    accounts = open_accounts(settings)
    try:
        account, _ = accounts.create("ana", "Ana", "caseworker", PASSWORD, "lgr_token")
    finally:
        accounts.close()
    assert not (tmp_path / "state" / "console.key").exists()
    assert oct((tmp_path / "secret" / "k").stat().st_mode & 0o777) == "0o600"
    reopened = open_accounts(settings)
    try:
        assert reopened.ledger_token(account) == "lgr_token"
    finally:
        reopened.close()


def test_the_console_asks_the_log_origin_once_not_before_every_event(
    world: World, desk: Desk
) -> None:
    """On a bad connection every round trip counts: a signed event is one request."""
    desk.account("ana")
    desk.login("ana")
    intake(desk)  # the first signed event learns the origin
    seen: list[str] = []
    real = desk.http.app.state.console.transport.handle_request  # type: ignore[attr-defined]

    def counting(request: Any) -> Any:
        seen.append(f"{request.method} {request.url.path}")
        return real(request)

    desk.http.app.state.console.transport.handle_request = counting  # type: ignore[attr-defined]
    intake(desk)
    assert seen == ["POST /v1/events"]
