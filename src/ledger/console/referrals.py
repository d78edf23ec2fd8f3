"""The pages of sending and receiving: making a referral, the referrals board (received ones
to answer, open ones by due time, overdue ones marked in words), sharing data under a consent,
and a case's disclosure register ("who has seen or received this case's data")."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledger.client import LedgerHTTPError
from ledger.console.accounts import Session, csrf_matches
from ledger.console.pages import Console
from ledger.contract.vocabulary import (
    CATEGORIES,
    COMPONENTS,
    DECLINE_REASONS,
    URGENCIES,
    format_timestamp,
    is_agency_id,
)

log = logging.getLogger("ledger.console")

HEALTH = "health_psychosocial"
# The due time a referral gets unless the case worker sets one: health and psychosocial care
# within 24 hours (principle XI; the ledger holds it to 24 h after identification too), an
# urgent referral within two days, a routine one within a week.
DUE_HOURS = {HEALTH: 24, "urgent": 48, "routine": 7 * 24}


def default_due(component: str, urgency: str, now: datetime) -> datetime:
    hours = DUE_HOURS[HEALTH] if component == HEALTH else DUE_HOURS.get(urgency, 7 * 24)
    return now + timedelta(hours=hours)


def add_referrals(app: FastAPI, console: Console) -> None:
    def form_session(request: Request, form: Any) -> Session | Response:
        session = console.current(request)
        if session is None:
            return console.to_login()
        if not csrf_matches(session, form.get("csrf")):
            return console.refused(session)
        return session

    def recipient_of(form: Any) -> str | None:
        recipient = str(form.get("to", "")).strip()
        return recipient if is_agency_id(recipient) else None

    # -- making a referral -----------------------------------------------------------------------

    @app.get("/cases/{case_id}/referrals/new", response_class=HTMLResponse)
    def referral_form(request: Request, case_id: str) -> Response:
        session = console.current(request)
        if session is None:
            return console.to_login()
        if not console.valid_id(case_id):
            return console.not_found(session)
        return console.page("referral.html.j2", session.account.language, session,
                            case_id=case_id, components=COMPONENTS, urgencies=URGENCIES,
                            categories=CATEGORIES, consents=_consents(console, session, case_id),
                            due_hours=DUE_HOURS)  # fmt: skip

    @app.post("/cases/{case_id}/referrals/new", response_class=HTMLResponse)
    async def refer(request: Request, case_id: str) -> Response:
        form = await request.form()
        session = form_session(request, form)
        if not isinstance(session, Session):
            return session
        to = recipient_of(form)
        if not console.valid_id(case_id) or not console.valid_id(str(form.get("consent_id"))):
            return console.not_found(session)
        if to is None:
            return console.page("error.html.j2", session.account.language, session, 422,
                                message="name the receiving agency by its id")  # fmt: skip
        component = str(form.get("component", ""))
        urgency = str(form.get("urgency", "routine"))
        due = default_due(component, urgency, datetime.now(UTC).replace(microsecond=0))
        facts = {
            "referral_id": str(uuid.uuid4()),
            "to": to,
            "consent_id": str(form.get("consent_id")),
            "categories": sorted({str(v) for v in form.getlist("categories")}),
        }
        attrs = {"component": component, "due_by": format_timestamp(due), "urgency": urgency}
        with console.ledger(session.account) as ledger:
            try:
                ledger.submit("referral.made", case_id, facts, attrs)
            except (LedgerHTTPError, httpx.TransportError) as exc:
                return console.ledger_refused(session, exc)
        log.info("console referral made account=%s case=%s", session.account.id, case_id)
        return RedirectResponse("/referrals", status_code=303)

    # -- the board -------------------------------------------------------------------------------

    @app.get("/referrals", response_class=HTMLResponse)
    def board(request: Request) -> Response:
        session = console.current(request)
        if session is None:
            return console.to_login()
        agency = console.agency_name
        with console.ledger(session.account) as ledger:
            try:
                items = ledger.referrals()
            except (LedgerHTTPError, httpx.TransportError) as exc:
                return console.ledger_refused(session, exc)
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
        session = form_session(request, form)
        if not isinstance(session, Session):
            return session
        kinds = {"accept": "referral.accepted", "decline": "referral.declined",
                 "complete": "referral.completed"}  # fmt: skip
        if (
            action not in kinds
            or not console.valid_id(case_id)
            or not console.valid_id(referral_id)
        ):
            return console.not_found(session)
        reason = str(form.get("reason", "other")) if action == "decline" else None
        with console.ledger(session.account) as ledger:
            try:
                ledger.submit(kinds[action], case_id, {"referral_id": referral_id},
                              {"reason": reason})  # fmt: skip
            except (LedgerHTTPError, httpx.TransportError) as exc:
                return console.ledger_refused(session, exc)
        log.info("console referral %s account=%s case=%s", action, session.account.id, case_id)
        return RedirectResponse("/referrals", status_code=303)

    # -- sharing ---------------------------------------------------------------------------------

    @app.get("/cases/{case_id}/share", response_class=HTMLResponse)
    def share_form(request: Request, case_id: str) -> Response:
        session = console.current(request)
        if session is None:
            return console.to_login()
        if not console.valid_id(case_id):
            return console.not_found(session)
        return console.page("share.html.j2", session.account.language, session,
                            case_id=case_id, categories=CATEGORIES,
                            consents=_consents(console, session, case_id))  # fmt: skip

    @app.post("/cases/{case_id}/share", response_class=HTMLResponse)
    async def share(request: Request, case_id: str) -> Response:
        form = await request.form()
        session = form_session(request, form)
        if not isinstance(session, Session):
            return session
        to = recipient_of(form)
        if not console.valid_id(case_id) or not console.valid_id(str(form.get("consent_id"))):
            return console.not_found(session)
        if to is None:
            return console.page("error.html.j2", session.account.language, session, 422,
                                message="name the receiving agency by its id")  # fmt: skip
        facts = {
            "share_id": str(uuid.uuid4()),
            "recipient": to,
            "consent_id": str(form.get("consent_id")),
            "purpose": "data_sharing",
            "categories": sorted({str(v) for v in form.getlist("categories")}),
        }
        with console.ledger(session.account) as ledger:
            try:
                ledger.submit("data.shared", case_id, facts, {})
            except (LedgerHTTPError, httpx.TransportError) as exc:
                return console.ledger_refused(session, exc)
        log.info("console data shared account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/disclosures", status_code=303)

    # -- who has seen or received the case's data ------------------------------------------------

    @app.get("/cases/{case_id}/disclosures", response_class=HTMLResponse)
    def disclosures(request: Request, case_id: str) -> Response:
        session = console.current(request)
        if session is None:
            return console.to_login()
        if not console.valid_id(case_id):
            return console.not_found(session)
        with console.ledger(session.account) as ledger:
            try:
                register = ledger.disclosures(case_id)
            except (LedgerHTTPError, httpx.TransportError) as exc:
                return console.ledger_refused(session, exc)
        return console.page("disclosures.html.j2", session.account.language, session,
                            case_id=case_id, register=register)  # fmt: skip


def _consents(console: Console, session: Session, case_id: str) -> list[dict[str, Any]]:
    """The case's consents in force, to choose from (none if the agency cannot see them)."""
    with console.ledger(session.account) as ledger:
        try:
            register = ledger.consent_register(case_id)
        except (LedgerHTTPError, httpx.TransportError):
            return []
    return [c for c in register["consents"] if c["counts"]]
