"""Erasing a case, by two people. A supervisor of the agency holding the case records the
survivor's request (how it was received: `erasure.requested`); the agency's other
supervisors see it waiting (/erasures); another supervisor reviews what will be erased and
which agencies will be told, and confirms with a code of their authenticator given there and
then (`case.erased`). The erasure receipt then prints in the survivor's language.

The console never offers the second step to the person who made the first (the ledger
refuses it too: it compares the tokens), and caseworkers see neither step."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledger.client import LedgerHTTPError
from ledger.console.accounts import AccountError, Session
from ledger.console.i18n import chosen
from ledger.console.pages import Answered, Console
from ledger.contract.receipts import ErasureReceipt, ReceiptError
from ledger.contract.vocabulary import CATEGORIES, ERASURE_REASONS, format_timestamp

log = logging.getLogger("ledger.console")


def receipt_facts(text: str) -> ErasureReceipt | None:
    """What a receipt's signed text says (None if it does not read as one: it is shown
    verbatim anyway)."""
    try:
        return ErasureReceipt.parse(text[: text.rfind("\n\n") + 1])
    except (ReceiptError, ValueError):
        return None


def erased_or_missing(console: Console, session: Session, case_id: str) -> HTMLResponse:
    """A case not in the agency's list: erased (the ledger has its receipt, for the holder
    and every agency it was related to), or no case of this agency at all."""
    with console.ledger(session.account) as ledger:
        try:
            text = ledger.erasure_receipt(case_id)
        except LedgerHTTPError as exc:
            if exc.status == 404:
                return console.not_found(session)
            return console.ledger_refused(session, exc)
    facts = receipt_facts(text)
    return console.page("case-erased.html.j2", session.account.language, session, 410,
                        case_id=case_id, erased_at=facts and facts.erased_at)  # fmt: skip


def add_erasure(app: FastAPI, console: Console) -> None:
    def supervisor(request: Request, form: Any = None) -> Session:
        """A supervisor (and, for a form, its CSRF token checked first), or a refusal."""
        session = (
            console.person(request) if form is None else console.poster(request, form.get("csrf"))
        )
        return console.in_role(session, "supervisor", "only a supervisor can erase a case")

    def refusal(session: Session, status: int, message: str) -> HTMLResponse:
        return console.page("error.html.j2", session.account.language, session, status,
                            message=message)  # fmt: skip

    def held(session: Session, case_id: str) -> dict[str, Any]:
        """The case's summary if the agency holds it; an erased case answers as erased."""
        summary = console.ask(session, lambda ledger: ledger.case_summary(case_id))
        if summary is None:
            raise Answered(erased_or_missing(console, session, case_id))
        if not summary["holder"]:
            message = "only the agency that holds the case (the one that opened it) can erase it"
            raise Answered(refusal(session, 403, message))
        return summary

    def waiting(session: Session, case_id: str | None = None) -> list[dict[str, Any]]:
        requests = console.ask(session, lambda ledger: ledger.erasure_requests())
        return [r for r in requests if case_id in (None, r["case_id"])]

    def me(session: Session) -> str:
        """The id of the person's own ledger token: the ledger names who requested by it."""
        return str(console.ask(session, lambda ledger: ledger.whoami())["id"])

    @app.get("/erasures", response_class=HTMLResponse)
    def erasures(request: Request) -> Response:
        """The requests waiting for a second supervisor, oldest first."""
        session = supervisor(request)
        return console.page("erasures.html.j2", session.account.language, session,
                            requests=waiting(session), me=me(session))  # fmt: skip

    @app.get("/cases/{case_id}/erasure", response_class=HTMLResponse)
    def erasure(request: Request, case_id: str) -> Response:
        """The request form; or, once requested, the line saying another supervisor must
        confirm (for its requester) or the review with the confirmation (for the others)."""
        session = supervisor(request)
        case_id = console.checked_id(session, case_id)
        summary = held(session, case_id)
        requests, mine = waiting(session, case_id), me(session)
        theirs = [r for r in requests if r["requested_by"] != mine]
        if not theirs:
            return console.page("erasure.html.j2", session.account.language, session,
                                case=summary, requests=requests,
                                reasons=ERASURE_REASONS)  # fmt: skip
        names = {a["id"]: a["name"] for a in console.directory(session)}
        return console.page("erasure-review.html.j2", session.account.language, session,
                            case=summary, request=theirs[0], names=names,
                            categories=CATEGORIES)  # fmt: skip

    @app.post("/cases/{case_id}/erasure/request", response_class=HTMLResponse)
    async def request_erasure(request: Request, case_id: str) -> Response:
        """The first step: the survivor's request, and how it was received."""
        form = await request.form()
        session = supervisor(request, form)
        case_id = console.checked_id(session, case_id)
        reason = str(form.get("reason", ""))
        if reason not in ERASURE_REASONS:
            message = "say how the request was received"
            return refusal(session, 422, message)
        held(session, case_id)
        if not waiting(session, case_id):  # one request at a time is enough
            attrs = {"reason": reason}
            console.ask(session, lambda ledger: ledger.submit(
                "erasure.requested", case_id, {}, attrs))  # fmt: skip
            log.info("console erasure requested account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/erasure", status_code=303)

    @app.post("/cases/{case_id}/erasure/confirm", response_class=HTMLResponse)
    async def confirm_erasure(request: Request, case_id: str) -> Response:
        """The second step, by another supervisor, with a current code of their
        authenticator (never one used before)."""
        form = await request.form()
        session = supervisor(request, form)
        case_id = console.checked_id(session, case_id)
        request_id = console.checked_id(session, form.get("request_event_id"))
        held(session, case_id)
        found = next((r for r in waiting(session, case_id) if r["request_event_id"] == request_id),
                     None)  # fmt: skip
        if found is None:
            message = "this erasure request is not waiting any more: it may be confirmed already"
            return refusal(session, 409, message)
        if found["requested_by"] == me(session):
            message = "another supervisor must confirm the erasure you asked for"
            return refusal(session, 403, message)
        try:
            console.accounts.use_code(session.account.id, str(form.get("code", "")))
        except AccountError as exc:
            log.info("console erasure code refused account=%s case=%s", session.account.id,
                     case_id)  # fmt: skip
            return console.page("error.html.j2", session.account.language, session, 403,
                                message=exc.message, params=exc.params)  # fmt: skip
        facts = {"request_event_id": request_id}
        console.ask(session, lambda ledger: ledger.submit("case.erased", case_id, facts, {}))
        log.info("console case erased account=%s case=%s", session.account.id, case_id)
        return RedirectResponse(f"/cases/{case_id}/erasure/receipt", status_code=303)

    @app.get("/cases/{case_id}/erasure/receipt", response_class=HTMLResponse)
    def receipt(request: Request, case_id: str, lang: str = "") -> Response:
        """The erasure receipt to print for the survivor, in the language they read: the
        signed text as the ledger gave it, and what it proves and how to check it."""
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        text = console.ask(session, lambda ledger: ledger.erasure_receipt(case_id))
        return console.page("erasure-receipt.html.j2", chosen(lang, session.account.language),
                            session, case_id=case_id, receipt=text, facts=receipt_facts(text),
                            printed=format_timestamp(datetime.now(UTC)))  # fmt: skip
