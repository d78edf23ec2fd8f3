"""Erasure in the console, by two people, over HTTP through the real console app and a real
ledger (both backends): a supervisor records the survivor's request, another reviews what
will be erased and who will be told and confirms with a fresh authenticator code, and the
receipt prints in the survivor's language. Every refusal: a caseworker, the same supervisor,
a wrong or reused code (and too many wrong ones), a form without its CSRF token, a case
erased already, an agency that does not hold the case. And the ledger's list of pending
requests (GET /v1/erasure-requests) the console reads."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from ledger.console.accounts import AccountError, Accounts, Policy
from ledger.contract import crypto
from tests.conftest import World
from tests.test_console import PASSWORD, Clock, Desk, open_desk

REQUESTS = "/v1/erasure-requests"


@pytest.fixture
def holder(world: World, tmp_path: Path) -> Iterator[Desk]:
    made = open_desk(world, "ngo-a", tmp_path)
    yield made
    made.accounts.close()


@pytest.fixture
def clinic(world: World, tmp_path: Path) -> Iterator[Desk]:
    made = open_desk(world, "clinic", tmp_path)
    yield made
    made.accounts.close()


def another_browser(desk: Desk) -> Desk:
    """A second person at the same console, in their own browser (own cookies)."""
    return Desk(desk.agency, desk.accounts, desk.clock,
                TestClient(desk.http.app, base_url="http://127.0.0.1"))  # fmt: skip


def supervisor(desk: Desk, username: str) -> str:
    """A supervisor account, logged in with a code of its authenticator; its TOTP secret."""
    secret = desk.account(username, "supervisor")
    assert secret is not None
    r = desk.login(username, code=pyotp.TOTP(secret).at(desk.clock.now))
    assert r.status_code == 303, r.text
    return secret


def fresh_code(desk: Desk, secret: str) -> str:
    """The code of the next 30-second step: every code used so far is of an earlier one."""
    desk.clock.now += 30
    return pyotp.TOTP(secret).at(desk.clock.now)


def shared_case(world: World, desk: Desk, marker: str = "MARKER-erasure") -> str:
    """A case of the holder with data shared with the clinic under a consent."""
    world.agency("clinic")
    case_id = desk.agency.open_case(payload={"identity": {"name": marker}})
    consent = desk.agency.grant(case_id, ["clinic"])
    assert desk.agency.share(case_id, "clinic", consent).status_code == 201
    return case_id


def request_erasure(desk: Desk, case_id: str, reason: str = "survivor_request") -> Any:
    form = {"csrf": desk.csrf(f"/cases/{case_id}/erasure"), "reason": reason}
    return desk.http.post(f"/cases/{case_id}/erasure/request", data=form, follow_redirects=False)


def confirm(desk: Desk, case_id: str, request_id: str, code: str, csrf: str | None = None) -> Any:
    form = {"csrf": desk.csrf() if csrf is None else csrf, "request_event_id": request_id,
            "code": code}  # fmt: skip
    return desk.http.post(f"/cases/{case_id}/erasure/confirm", data=form, follow_redirects=False)


def pending(world: World, desk: Desk) -> list[dict[str, Any]]:
    r = world.http.get(REQUESTS, headers=desk.agency.auth("supervisor"))
    assert r.status_code == 200, r.text
    return list(r.json()["requests"])


def token_id(world: World, token: str) -> str:
    r = world.http.get("/v1/tokens/self", headers={"Authorization": f"Bearer {token}"})
    return str(r.json()["id"])


# -- the ledger's list of pending requests ---------------------------------------------------


def test_the_ledger_lists_pending_requests_for_supervisors_with_who_will_be_told(
    world: World, holder: Desk
) -> None:
    ngo = holder.agency
    case_id = shared_case(world, holder)
    untouched = ngo.open_case()  # no other agency: its erasure tells nobody
    assert pending(world, holder) == []
    first = ngo.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"},
                   role="supervisor")  # fmt: skip
    ngo.ok("erasure.requested", untouched, {}, {"reason": "legal_order"}, role="supervisor")
    listed = pending(world, holder)
    assert [(r["case_id"], r["notify"]) for r in listed] == [(case_id, ["clinic"]), (untouched, [])]
    assert listed[0]["request_event_id"] == first["event_id"]
    assert listed[0]["requested_by"] == token_id(world, ngo.tokens["supervisor"])
    assert "MARKER-erasure" not in str(listed)
    # Only supervisors, and only of their own agency's cases.
    r = world.http.get(REQUESTS, headers=ngo.auth("caseworker"))
    assert r.status_code == 403
    assert world.http.get(REQUESTS, headers=world.agency("clinic").auth("supervisor")).json() == {
        "requests": []
    }
    # The erasure tells who the list said, and leaves the list.
    second = {"Authorization": f"Bearer {world.token('supervisor', ngo.id)}"}
    body = ngo.body("case.erased", case_id, {"request_event_id": first["event_id"]}, {})
    answer = world.http.post("/v1/events", json=body, headers=second)
    assert answer.status_code == 201 and answer.json()["notify"] == listed[0]["notify"]
    assert [r["case_id"] for r in pending(world, holder)] == [untouched]


# -- the two steps through the console -------------------------------------------------------


def test_two_supervisors_erase_a_case_and_the_receipt_prints(
    world: World, holder: Desk, clinic: Desk
) -> None:
    case_id = shared_case(world, holder)
    ana_secret = supervisor(holder, "ana")
    page = holder.http.get(f"/cases/{case_id}")
    assert f'href="/cases/{case_id}/erasure"' in page.text and 'href="/erasures"' in page.text
    form = holder.http.get(f"/cases/{case_id}/erasure").text
    assert "¿Cómo llegó el pedido?" in form and "Lo ordenó un juez" in form
    size = world.ledger.store.log_size()
    assert request_erasure(holder, case_id).status_code == 303
    assert world.ledger.store.log_size() == size + 1  # erasure.requested, and nothing else
    (request,) = pending(world, holder)
    # The one who asked is never offered the second step: a line says so instead.
    mine = holder.http.get(f"/cases/{case_id}/erasure").text
    assert "Otra persona supervisora de su agencia debe confirmarlo" in mine
    assert "/erasure/confirm" not in mine and 'name="code"' not in mine
    assert request_erasure(holder, case_id).status_code == 303  # once is enough
    assert world.ledger.store.log_size() == size + 1
    listed = holder.http.get("/erasures").text
    assert case_id[:8] in listed and "Otra persona supervisora debe confirmarlo." in listed
    assert f'href="/cases/{case_id}/erasure"' not in listed
    # A forged confirmation by the same supervisor, even with a fresh code: refused.
    forged = confirm(holder, case_id, request["request_event_id"], fresh_code(holder, ana_secret))
    assert forged.status_code == 403 and "otra persona supervisora debe confirmar" in forged.text
    assert world.ledger.store.log_size() == size + 1
    # Another supervisor: the list links the review, which says what goes and who is told.
    ben = another_browser(holder)
    ben_secret = supervisor(ben, "ben")
    assert f'href="/cases/{case_id}/erasure"' in ben.http.get("/erasures").text
    review = ben.http.get(f"/cases/{case_id}/erasure").text
    assert "Qué se va a borrar" in review and "A quién se va a avisar" in review
    assert "<li>CLINIC</li>" in review  # the agency told, by its registered name
    assert "Esto no se puede deshacer" in review
    assert review.index("Esto no se puede deshacer") < review.index("/erasure/confirm")
    assert "MARKER-erasure" not in review  # the review unseals nothing
    assert world.ledger.store.log_size() == size + 1  # nor is it a logged read
    # Wrong, reused, and without the session's CSRF token: refused, nothing recorded.
    login_code = pyotp.TOTP(ben_secret).at(ben.clock.now)
    wrong = confirm(ben, case_id, request["request_event_id"], "000000")
    assert wrong.status_code == 403 and "el código no es correcto" in wrong.text
    reused = confirm(ben, case_id, request["request_event_id"], login_code)
    assert reused.status_code == 403 and "este código ya se usó" in reused.text
    code = fresh_code(ben, ben_secret)
    for csrf in ("", "forged"):
        assert confirm(ben, case_id, request["request_event_id"], code, csrf).status_code == 403
    assert world.ledger.store.log_size() == size + 1
    done = confirm(ben, case_id, request["request_event_id"], code)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/cases/{case_id}/erasure/receipt"
    state = world.ledger.cases.load(case_id).state  # type: ignore[union-attr]
    assert state.erased
    # The receipt: the signed text verbatim, explained in the survivor's language.
    signed = world.http.get(f"/v1/cases/{case_id}/erasure-receipt", headers=holder.agency.auth())
    shown = ben.http.get(f"/cases/{case_id}/erasure/receipt")
    assert shown.status_code == 200 and "Comprobante de borrado" in shown.text
    assert "Qué prueba este comprobante" in shown.text and "Cómo comprobarlo" in shown.text
    assert signed.status_code == 200 and f'lang="en">{signed.text}</pre>' in shown.text
    for lang, said in (("fr", "Ce que prouve ce reçu"), ("pt", "O que este comprovante prova"),
                       ("en", "What this receipt proves")):  # fmt: skip
        printed = ben.http.get(f"/cases/{case_id}/erasure/receipt?lang={lang}")
        assert f'<html lang="{lang}">' in printed.text and said in printed.text
    assert 'id="receipt-lang"' in shown.text  # the language is chosen on the page
    # The case answers as erased in both agencies' consoles.
    for desk in (ben, clinic):
        if desk is clinic:
            clinic.account("carla")
            clinic.login("carla")
        erased = desk.http.get(f"/cases/{case_id}")
        assert erased.status_code == 410 and "Este caso se borró el" in erased.text
        assert f'href="/cases/{case_id}/erasure/receipt"' in erased.text
        assert desk.http.get(f"/cases/{case_id}/erasure/receipt").status_code == 200
    # Erased already: neither step again.
    size = world.ledger.store.log_size()
    again = confirm(ben, case_id, request["request_event_id"], fresh_code(ben, ben_secret))
    assert again.status_code == 410 and "Este caso se borró el" in again.text
    assert request_erasure(ben, case_id).status_code == 410
    assert world.ledger.store.log_size() == size
    assert "No hay ningún pedido de borrado esperando." in ben.http.get("/erasures").text


def test_caseworkers_see_neither_step(world: World, holder: Desk) -> None:
    case_id = shared_case(world, holder)
    request = holder.agency.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"},
                               role="supervisor")  # fmt: skip
    holder.account("carla")
    holder.login("carla")
    page = holder.http.get(f"/cases/{case_id}").text
    assert "/erasure" not in page  # neither the case's link nor the navigation's
    assert holder.http.get("/erasures").status_code == 403
    assert holder.http.get(f"/cases/{case_id}/erasure").status_code == 403
    size = world.ledger.store.log_size()
    form = {"csrf": holder.csrf(), "reason": "survivor_request"}
    r = holder.http.post(f"/cases/{case_id}/erasure/request", data=form)
    assert r.status_code == 403 and "solo una persona supervisora puede borrar" in r.text
    r = confirm(holder, case_id, request["event_id"], "123456")
    assert r.status_code == 403
    assert world.ledger.store.log_size() == size


def test_the_erasure_forms_need_the_session_csrf_token(world: World, holder: Desk) -> None:
    case_id = shared_case(world, holder)
    supervisor(holder, "ana")
    size = world.ledger.store.log_size()
    for csrf in (None, "forged"):
        form = {"reason": "survivor_request"} | ({} if csrf is None else {"csrf": csrf})
        r = holder.http.post(f"/cases/{case_id}/erasure/request", data=form)
        assert r.status_code == 403
        form = {"request_event_id": str(uuid.uuid4()), "code": "123456"}
        form |= {} if csrf is None else {"csrf": csrf}
        assert holder.http.post(f"/cases/{case_id}/erasure/confirm", data=form).status_code == 403
    assert world.ledger.store.log_size() == size and pending(world, holder) == []


def test_only_the_agency_holding_the_case_erases_it(
    world: World, holder: Desk, clinic: Desk
) -> None:
    case_id = shared_case(world, holder)
    request = holder.agency.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"},
                               role="supervisor")  # fmt: skip
    dora_secret = supervisor(clinic, "dora")
    page = clinic.http.get(f"/cases/{case_id}").text  # the clinic received data: it sees it
    assert case_id[:8] in page and "/erasure" not in page.split("<main", 1)[1]
    refused = clinic.http.get(f"/cases/{case_id}/erasure")
    assert refused.status_code == 403 and "solo la agencia a cargo del caso" in refused.text
    size = world.ledger.store.log_size()
    assert request_erasure(clinic, case_id).status_code == 403
    r = confirm(clinic, case_id, request["event_id"], fresh_code(clinic, dora_secret))
    assert r.status_code == 403
    assert "No hay ningún pedido de borrado esperando." in clinic.http.get("/erasures").text
    assert world.ledger.store.log_size() == size
    # A case of another agency the clinic never heard of: as if it did not exist.
    unknown = holder.agency.open_case()
    assert clinic.http.get(f"/cases/{unknown}/erasure").status_code == 404
    assert clinic.http.get(f"/cases/{unknown}/erasure/receipt").status_code == 404
    assert clinic.http.get(f"/cases/{uuid.uuid4()}").status_code == 404


def test_a_request_no_longer_waiting_or_unknown_is_refused(world: World, holder: Desk) -> None:
    case_id = shared_case(world, holder)
    supervisor(holder, "ana")
    ben = another_browser(holder)
    ben_secret = supervisor(ben, "ben")
    r = confirm(ben, case_id, str(uuid.uuid4()), fresh_code(ben, ben_secret))
    assert r.status_code == 409 and "ya no está pendiente" in r.text
    r = ben.http.post(f"/cases/{case_id}/erasure/request",
                      data={"csrf": ben.csrf(), "reason": "because"})  # fmt: skip
    assert r.status_code == 422 and "indique cómo llegó el pedido" in r.text
    assert pending(world, holder) == []


def test_too_many_wrong_codes_lock_the_account_and_end_the_session(
    world: World, holder: Desk
) -> None:
    case_id = shared_case(world, holder)
    request = holder.agency.ok("erasure.requested", case_id, {}, {"reason": "survivor_request"},
                               role="supervisor")  # fmt: skip
    supervisor(holder, "ben")
    csrf = holder.csrf()
    for attempt in range(Policy().max_failures):
        r = confirm(holder, case_id, request["event_id"], f"{attempt:06d}", csrf)
        assert r.status_code == 403
    assert "la cuenta queda bloqueada durante 15 minutos" in r.text
    assert holder.http.get("/cases", follow_redirects=False).headers["location"] == "/login"
    with pytest.raises(AccountError, match="locked"):
        holder.accounts.login("ben", PASSWORD, None)
    assert not world.ledger.cases.load(case_id).state.erased  # type: ignore[union-attr]


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_code_is_used_up_once_even_by_requests_at_the_same_time(
    store: str, tmp_path: Path
) -> None:
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
        account, secret = accounts.create("sup", "Sup", "supervisor", PASSWORD, "lgr_t")
        assert secret is not None
        code = pyotp.TOTP(secret).at(clock.now)
        barrier, outcomes = threading.Barrier(8), []

        def use() -> None:
            barrier.wait()
            try:
                accounts.use_code(account.id, code)
                outcomes.append("accepted")
            except AccountError as exc:
                outcomes.append(exc.message)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("accepted") == 1, outcomes
        assert all("used already" in o for o in outcomes if o != "accepted")
        with pytest.raises(AccountError, match="wrong"):
            accounts.login("sup", PASSWORD, code)  # nor at the next login
        caseworker, _ = accounts.create("cw", "Cw", "caseworker", PASSWORD, "lgr_u")
        with pytest.raises(AccountError, match="second factor"):
            accounts.use_code(caseworker.id, code)
    finally:
        accounts.close()
        if url is not None:
            import psycopg

            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_every_text_of_the_erasure_pages_is_in_spanish_portuguese_and_french() -> None:
    from babel.messages.pofile import read_po

    from ledger.console.i18n import translations

    root = Path(__file__).resolve().parent.parent / "src" / "ledger" / "console"
    texts: set[str] = set()
    for name in ("erasure", "erasure-review", "erasures", "case-erased", "erasure-receipt"):
        texts.update(
            re.findall(r'_\("([^"]+)"\)', (root / "templates" / f"{name}.html.j2").read_text())
        )
    source = (root / "erasure.py").read_text()
    texts.update(re.findall(r'message(?:=| = )"([^"]+)"', source))
    accounts = (root / "accounts.py").read_text()
    use_code = accounts[accounts.index("def use_code") : accounts.index("def change_password")]
    texts.update(re.findall(r'AccountError\(\s*"([^"]+)"', use_code))
    texts.update(
        f"erasure reason {r}" for r in ("survivor_request", "guardian_request", "legal_order")
    )
    assert len(texts) > 50
    for language in ("es", "pt", "fr"):
        with (root / "locales" / language / "LC_MESSAGES" / "console.po").open("rb") as f:
            catalog = read_po(f)
        words = translations(language)
        missing = sorted(t for t in texts if t not in catalog or not words.gettext(t))
        assert missing == [], language
    english = translations("en")
    assert (
        english.gettext("erasure reason legal_order") == "A court or another authority ordered it"
    )
