"""The pages of sending and receiving: making a referral, the referrals board (received ones
to answer, open ones by due time, overdue ones marked in words), sharing data under a consent,
and a case's disclosure register ("who has seen or received this case's data")."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledger.console.accounts import Session
from ledger.console.i18n import chosen
from ledger.console.pages import Answered, Console
from ledger.contract.notices import DUE_HOURS
from ledger.contract.vocabulary import (
    ACK_ACTIONS,
    ACK_KINDS,
    CATEGORIES,
    COMPONENTS,
    DECLINE_REASONS,
    RETENTION_BASES,
    URGENCIES,
    format_timestamp,
    is_agency_id,
)

log = logging.getLogger("ledger.console")

INBOX_PAGES = 50  # pages of 100 notices the inbox reads at most


def add_referrals(app: FastAPI, console: Console) -> None:
    def recipient_of(session: Session, form: Any) -> str:
        recipient = str(form.get("to", "")).strip()
        if not is_agency_id(recipient):
            raise Answered(console.page("error.html.j2", session.account.language, session, 422,
                                        message="choose the receiving agency"))  # fmt: skip
        return recipient

    def chosen_consent(session: Session, consent: str | None) -> str | None:
        """The consent the person chose in the consent register (its links carry it): the
        forms read nothing from the ledger, so opening one records no read."""
        return None if consent is None else console.checked_id(session, consent)

    # -- making a referral -----------------------------------------------------------------------

    @app.get("/cases/{case_id}/referrals/new", response_class=HTMLResponse)
    def referral_form(request: Request, case_id: str, consent: str | None = None) -> Response:
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        return console.page("referral.html.j2", session.account.language, session,
                            case_id=case_id, components=COMPONENTS, urgencies=URGENCIES,
                            categories=CATEGORIES, consent=chosen_consent(session, consent),
                            due_hours=DUE_HOURS,
                            agencies=console.recipients(session))  # fmt: skip

    @app.post("/cases/{case_id}/referrals/new", response_class=HTMLResponse)
    async def refer(request: Request, case_id: str) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        consent_id = console.checked_id(session, form.get("consent_id"))
        to = recipient_of(session, form)
        component = str(form.get("component", ""))
        urgency = str(form.get("urgency", "routine"))
        facts = {
            "referral_id": str(uuid.uuid4()),
            "to": to,
            "consent_id": consent_id,
            "categories": sorted({str(v) for v in form.getlist("categories")}),
        }
        # The due time is the ledger's default (`contract.notices.default_due`, the hours the
        # form shows): one definition, decided from the signed event.
        attrs = {"component": component, "due_by": None, "urgency": urgency}
        console.ask(session, lambda ledger: ledger.submit("referral.made", case_id, facts, attrs))
        log.info("console referral made account=%s case=%s", session.account.id, case_id)
        return RedirectResponse("/referrals", status_code=303)

    # -- the board -------------------------------------------------------------------------------

    @app.get("/referrals", response_class=HTMLResponse)
    def board(request: Request) -> Response:
        session = console.person(request)
        agency = console.agency_name
        items = console.ask(session, lambda ledger: ledger.referrals())
        received = [r for r in items if r["to"] == agency and r["status"] == "pending"]
        open_ = sorted(
            (r for r in items if r["status"] in ("pending", "accepted")),
            key=lambda r: (r["due_by"] is None, r["due_by"] or ""),
        )
        return console.page("referrals.html.j2", session.account.language, session,
                            received=received, open=open_, agency=agency,
                            decline_reasons=DECLINE_REASONS)  # fmt: skip

    @app.post("/referrals/{case_id}/{referral_id}/{action}", response_class=HTMLResponse)
    async def answer(request: Request, case_id: str, referral_id: str, action: str) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        referral_id = console.checked_id(session, referral_id)
        kinds = {"accept": "referral.accepted", "decline": "referral.declined",
                 "complete": "referral.completed"}  # fmt: skip
        if action not in kinds:
            raise Answered(console.not_found(session))
        reason = str(form.get("reason", "other")) if action == "decline" else None
        console.ask(session, lambda ledger: ledger.submit(
            kinds[action], case_id, {"referral_id": referral_id}, {"reason": reason}))  # fmt: skip
        log.info("console referral %s account=%s case=%s", action, session.account.id, case_id)
        return RedirectResponse("/referrals", status_code=303)

    # -- notices -------------------------------------------------------------------------------

    @app.get("/notices", response_class=HTMLResponse)
    def inbox(request: Request) -> Response:
        """What the ledger told this agency (referrals, answers, shares, withdrawals and
        erasures to act on), newest first."""
        session = console.person(request)

        def everything(ledger: Any) -> list[dict[str, Any]]:
            found, after = [], 0
            for _ in range(INBOX_PAGES):
                page = ledger.notices(after)
                if not page["notices"]:
                    break
                found += page["notices"]
                after = page["next"]
            return found

        notices = console.ask(session, everything)
        return console.page("notices.html.j2", session.account.language, session,
                            notices=list(reversed(notices)), actions=ACK_ACTIONS,
                            bases=RETENTION_BASES)  # fmt: skip

    @app.post("/notices/{case_id}/{position}/acknowledge", response_class=HTMLResponse)
    async def acknowledge(request: Request, case_id: str, position: int) -> Response:
        """The agency's answer to a withdrawal or erasure, signed with its key: what it did
        with what it held (the ledger takes it only from an agency the notice told)."""
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        kind, action = str(form.get("kind", "")), str(form.get("action", ""))
        basis = str(form.get("legal_basis", "")) or None
        if kind not in ACK_KINDS or action not in ACK_ACTIONS or position < 0:
            raise Answered(console.not_found(session))
        if action != "kept_legal_obligation":
            basis = None  # a basis only for what is kept
        facts = {"position": position, "kind": kind, "action": action, "legal_basis": basis}
        console.ask(
            session, lambda ledger: ledger.submit("notice.acknowledged", case_id, facts, {})
        )
        log.info("console notice acknowledged account=%s case=%s", session.account.id, case_id)
        return RedirectResponse("/notices", status_code=303)

    # -- sharing ---------------------------------------------------------------------------------

    @app.get("/cases/{case_id}/share", response_class=HTMLResponse)
    def share_form(request: Request, case_id: str, consent: str | None = None) -> Response:
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        return console.page("share.html.j2", session.account.language, session,
                            case_id=case_id, categories=CATEGORIES,
                            consent=chosen_consent(session, consent),
                            agencies=console.recipients(session))  # fmt: skip

    @app.post("/cases/{case_id}/share", response_class=HTMLResponse)
    async def share(request: Request, case_id: str) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        consent_id = console.checked_id(session, form.get("consent_id"))
        facts = {
            "share_id": str(uuid.uuid4()),
            "recipient": recipient_of(session, form),
            "consent_id": consent_id,
            "purpose": "data_sharing",
            "categories": sorted({str(v) for v in form.getlist("categories")}),
        }
        console.ask(session, lambda ledger: ledger.submit("data.shared", case_id, facts, {}))
        log.info("console data shared account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/disclosures", status_code=303)

    # -- who has seen or received the case's data ------------------------------------------------

    @app.get("/cases/{case_id}/disclosures", response_class=HTMLResponse)
    def disclosures(request: Request, case_id: str) -> Response:
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        register = console.ask(session, lambda ledger: ledger.disclosures(case_id))
        told = console.ask(session, lambda ledger: ledger.case_notices(case_id))
        return console.page("disclosures.html.j2", session.account.language, session,
                            case_id=case_id, register=register, told=told)  # fmt: skip

    @app.get("/cases/{case_id}/disclosures/print", response_class=HTMLResponse)
    def disclosures_printout(request: Request, case_id: str, lang: str = "") -> Response:
        """The register to print and hand to the survivor, in the language they read (the
        case worker picks it): agencies by name, no case id, no name, safe to carry."""
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        register = console.ask(session, lambda ledger: ledger.disclosures(case_id))
        names = {a["id"]: a["name"] for a in console.directory(session)}
        return console.page("disclosures-print.html.j2", chosen(lang, session.account.language),
                            session, case_id=case_id, register=register, names=names,
                            printed=format_timestamp(datetime.now(UTC)))  # fmt: skip
