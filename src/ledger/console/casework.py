"""The case worker's pages that record events: intake (open a case), the consent register,
capturing a consent, its receipt, and withdrawing one. Each event is built and signed here
with the agency's key and submitted with the person's own token; the ledger decides, and a
refusal is shown in plain words (`Console.ask`)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledger.console.pages import Answered, Console
from ledger.contract.vocabulary import (
    AGE_BANDS,
    CATEGORIES,
    EXPLOITATIONS,
    GENDERS,
    GIVEN_BY,
    PURPOSES,
    WITHDRAWAL_REASONS,
    is_agency_id,
)

log = logging.getLogger("ledger.console")

NOTICE_VERSION = "console-2026-12"  # the consent notice the console shows (its text's version)
CONSENT_LANGUAGES = ("es", "en", "pt", "fr")


def add_casework(app: FastAPI, console: Console) -> None:
    # -- intake ----------------------------------------------------------------------------------

    @app.get("/cases/new", response_class=HTMLResponse)
    def intake_form(request: Request) -> Response:
        session = console.person(request)
        return console.page(
            "intake.html.j2", session.account.language, session, age_bands=AGE_BANDS,
            genders=GENDERS, exploitations=EXPLOITATIONS, today=_today(),
        )  # fmt: skip

    @app.post("/cases/new", response_class=HTMLResponse)
    async def intake(request: Request) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        age_band = str(form.get("age_band", "unknown"))
        attrs = {
            "age_band": age_band,
            "gender": str(form.get("gender", "undisclosed")),
            "exploitation": sorted({str(v) for v in form.getlist("exploitation")}),
            "identified_at": str(form.get("identified_at", "")),
        }
        if not attrs["exploitation"]:
            message = "choose at least one form of exploitation, or other"
            return console.page("error.html.j2", session.account.language, session, 422,
                                message=message)  # fmt: skip
        identity = {k: str(form.get(k, "")).strip() for k in ("name", "nationality")}
        payload: dict[str, Any] = {"identity": {k: v for k, v in identity.items() if v}}
        if phone := str(form.get("phone", "")).strip():
            payload["contact"] = {"phone": phone}
        if notes := str(form.get("notes", "")).strip():
            payload["notes"] = {"text": notes}
        case_id = str(uuid.uuid4())
        # A child, or anyone whose age is unknown, is treated as a minor (presumption).
        facts = {"minor": age_band != "adult"}
        console.ask(session, lambda ledger: ledger.submit(
            "case.opened", case_id, facts, attrs, payload))  # fmt: skip
        log.info("console case opened account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    # -- consents --------------------------------------------------------------------------------

    @app.get("/cases/{case_id}/consents", response_class=HTMLResponse)
    def consents(request: Request, case_id: str) -> Response:
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        register = console.ask(
            session, lambda ledger: ledger.consent_register(case_id, details=False)
        )
        return console.page("consents.html.j2", session.account.language, session,
                            case_id=case_id, register=register,
                            reasons=WITHDRAWAL_REASONS)  # fmt: skip

    @app.get("/cases/{case_id}/consents/new", response_class=HTMLResponse)
    def consent_form(request: Request, case_id: str) -> Response:
        session = console.person(request)
        return console.page(
            "consent.html.j2", session.account.language, session,
            case_id=console.checked_id(session, case_id), purposes=PURPOSES,
            categories=CATEGORIES, given_by=GIVEN_BY, languages_of_consent=CONSENT_LANGUAGES,
            agencies=console.recipients(session),
        )  # fmt: skip

    @app.post("/cases/{case_id}/consents/new", response_class=HTMLResponse)
    async def consent(request: Request, case_id: str) -> Response:
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        recipients = sorted({str(r) for r in form.getlist("recipients")})
        if not recipients or not all(is_agency_id(r) for r in recipients):
            message = "choose at least one agency that may receive it"
            return console.page("error.html.j2", session.account.language, session, 422,
                                message=message)  # fmt: skip
        assent = form.get("child_assent")
        expires = str(form.get("expires_on", "")).strip()
        facts = {
            "consent_id": str(uuid.uuid4()),
            "purposes": sorted({str(v) for v in form.getlist("purposes")}),
            "recipients": recipients,
            "categories": sorted({str(v) for v in form.getlist("categories")}),
            "expires_at": f"{expires}T23:59:59Z" if expires else None,
            "given_by": str(form.get("given_by", "survivor")),
            "child_assent": None if assent in (None, "") else assent == "yes",
            "assent_exempt": form.get("assent_exempt") == "yes",
        }
        attrs = {
            "language": str(form.get("language", "es")),
            "interpreter": form.get("interpreter") == "yes",
            "notice_version": NOTICE_VERSION,
        }
        console.ask(session, lambda ledger: ledger.submit(
            "consent.granted", case_id, facts, attrs))  # fmt: skip
        log.info("console consent recorded account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/consents", status_code=303)

    @app.get("/cases/{case_id}/consents/{consent_id}/receipt")
    def receipt(request: Request, case_id: str, consent_id: str, format: str = "html") -> Response:
        """The receipt to print or hand over, in the consent's language, as the ledger makes
        it: a receipt code, no ids, neutral wording (safe to carry)."""
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        consent_id = console.checked_id(session, consent_id)
        if format not in ("html", "pdf"):
            raise Answered(console.not_found(session))
        body = console.ask(
            session, lambda ledger: ledger.consent_receipt(case_id, consent_id, format)
        )
        if format == "pdf":
            disposition = 'inline; filename="receipt.pdf"'
            return Response(body, media_type="application/pdf",
                            headers={"Content-Disposition": disposition})  # fmt: skip
        # Its own inline style only: no script, no request, no form, sandboxed.
        csp = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none';"
            " form-action 'none'; base-uri 'none'; sandbox"
        )
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": csp})  # fmt: skip

    @app.post("/cases/{case_id}/consents/{consent_id}/withdraw", response_class=HTMLResponse)
    async def withdraw(request: Request, case_id: str, consent_id: str) -> Response:
        """Two steps: the first shows who loses access; the confirmed second records it."""
        form = await request.form()
        session = console.poster(request, form.get("csrf"))
        case_id = console.checked_id(session, case_id)
        consent_id = console.checked_id(session, consent_id)
        reason = str(form.get("reason", "survivor_request"))
        if form.get("confirmed") != "yes":
            register = console.ask(
                session, lambda ledger: ledger.consent_register(case_id, details=False)
            )
            chosen = next((c for c in register["consents"] if c["consent_id"] == consent_id), None)
            if chosen is None:
                raise Answered(console.not_found(session))
            return console.page("withdraw.html.j2", session.account.language, session,
                                case_id=case_id, consent=chosen, reason=reason)  # fmt: skip
        facts, attrs = {"consent_id": consent_id}, {"reason": reason}
        console.ask(
            session, lambda ledger: ledger.submit("consent.withdrawn", case_id, facts, attrs)
        )
        log.info("console consent withdrawn account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/consents", status_code=303)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")
