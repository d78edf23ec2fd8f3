"""The console's web application: server-rendered pages (FastAPI and Jinja2); one optional
script of its own (static/idle.js: a screen left open logs itself out).

Every page answers with a strict Content-Security-Policy, `frame-ancestors 'none'`, no
referrer and `Cache-Control: no-store`; every state-changing request carries the session's
CSRF token (the login form a double-submit one); the session cookie is HttpOnly,
SameSite=Strict, and Secure unless the console listens on loopback only. Each person acts
with their own ledger token, so the ledger's records name who acted."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ledger.client import LedgerHTTPError
from ledger.client.session import LedgerClient, Page
from ledger.console.accounts import Account, AccountError, Session, csrf_matches
from ledger.console.casework import add_casework
from ledger.console.dashboard import add_dashboard
from ledger.console.erasure import add_erasure, erased_or_missing
from ledger.console.i18n import chosen
from ledger.console.monitor import add_monitor
from ledger.console.pages import (
    HEADERS,
    HERE,
    LOGIN_COOKIE,
    LOOPBACK,
    SESSION_COOKIE,
    Answered,
    Console,
    MustChange,
    check_token,
    home_of,
)
from ledger.console.referrals import add_referrals

log = logging.getLogger("ledger.console")
ANYWHERE = "0.0.0.0"  # noqa: S104 (a setting's value, compared; nothing binds here)

PAGE = 50  # cases on one page of the list
CURSOR = re.compile(r"[A-Za-z0-9_-]{1,512}")  # a ledger cursor, as the Older link carries it
WALK_PAGES = 100  # the furthest page reached without a cursor (Newer links, typed numbers)


def create_app(console: Console) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # Answer only to its own names (a guard against DNS rebinding); "listen everywhere" is
    # no name.
    hosts = {console.settings.host, *LOOPBACK, *console.settings.allowed_hosts} - {ANYWHERE}
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=sorted(hosts))

    @app.exception_handler(MustChange)
    async def must_change(request: Request, exc: MustChange) -> Response:
        return RedirectResponse("/password", status_code=303)

    @app.exception_handler(Answered)
    async def answered(request: Request, exc: Answered) -> Response:
        return exc.response

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    default = console.settings.language

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    add_casework(app, console)  # first: /cases/new before /cases/{case_id}
    add_referrals(app, console)
    add_erasure(app, console)
    add_dashboard(app, console)
    add_monitor(app, console)

    # -- logging in and out ----------------------------------------------------------------------

    def login_page(language: str, status: int = 200, **context: Any) -> Response:
        """The login form with a fresh double-submit token, in its cookie and its field."""
        token = secrets.token_urlsafe(32)
        response = console.page("login.html.j2", language, None, status, csrf=token, **context)
        console.set_cookie(response, LOGIN_COOKIE, token)
        return response

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, lang: str | None = None, ended: str = "") -> Response:
        return login_page(chosen(lang, default), ended=ended == "idle")

    @app.post("/login", response_class=HTMLResponse)
    def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        code: str = Form(""),
        csrf: str = Form(""),
        lang: str = Form(""),
    ) -> Response:
        language = chosen(lang, default)
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or not secrets.compare_digest(expected.encode(), csrf.encode()):
            return login_page(language, 403, error="this form expired; try again")
        try:
            session_id, session = console.accounts.login(
                username, password, code or None, replacing=request.cookies.get(SESSION_COOKIE)
            )
        except AccountError as exc:
            log.info("console login refused")  # no username: it may be a mistyped password
            return console.page("login.html.j2", language, None, 401, csrf=csrf,
                                error=exc.message, params=exc.params)  # fmt: skip
        log.info("console login account=%s", session.account.id)
        done = RedirectResponse(
            "/password" if session.account.must_change else home_of(session.account),
            status_code=303,
        )
        console.set_cookie(done, SESSION_COOKIE, session_id)
        done.delete_cookie(LOGIN_COOKIE)
        return done

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form(""), ended: str = Form("")) -> Response:
        """Log out (`ended=idle`: the page's script did, after the idle time)."""
        session = console.current(request)
        if session is not None and not csrf_matches(session, csrf):
            return console.refused(session)
        console.accounts.logout(request.cookies.get(SESSION_COOKIE))
        if ended != "idle" or session is None:
            return console.to_login()
        return console.to_login(f"/login?ended=idle&lang={session.account.language}")

    @app.post("/alive", status_code=204)
    def alive(request: Request) -> Response:
        """The page's script: the person is working on this page (typing a long form), so
        the session's idle time restarts. Needs the session's CSRF token in a header."""
        session = console.current(request)
        if session is None:
            return Response(status_code=401)
        if not csrf_matches(session, request.headers.get("x-csrf-token")):
            return Response(status_code=403)
        return Response(status_code=204)

    @app.get("/")
    def home(request: Request) -> Response:
        current = console.current(request)
        return RedirectResponse(home_of(current.account) if current else "/login", 303)

    # -- cases ---------------------------------------------------------------------------------

    @app.get("/cases", response_class=HTMLResponse)
    def cases(request: Request, page: int = 1, cursor: str | None = None) -> Response:
        """The agency's cases, newest first, a page of `PAGE` at a time, read from the
        ledger a page at a time: `cursor` is the ledger's cursor of page `page` (the Older
        link carries it); without it the pages before are followed from the first (the
        Newer link, and page numbers typed in). Past the last page, the last one."""
        session = console.person(request)
        if cursor is not None and not CURSOR.fullmatch(cursor):
            cursor, page = None, 1
        # Followed from the first page, a page number costs a request per page before it.
        page = max(1, min(page, 10_000 if cursor else WALK_PAGES))

        def read(ledger: LedgerClient) -> tuple[int, Page]:
            number, shown = (page, ledger.case_page(cursor, PAGE)) if cursor else (1, None)
            if shown is None:
                shown = ledger.case_page(None, PAGE)
                while number < page and shown.next is not None:
                    following = ledger.case_page(shown.next, PAGE)
                    if not following.items:
                        break  # the last page was full: stay on it
                    number, shown = number + 1, following
            return number, shown

        number, shown = console.ask(session, read)
        return console.page("cases.html.j2", session.account.language, session,
                            cases=shown.items, page=number, next=shown.next,
                            first=(number - 1) * PAGE + 1)  # fmt: skip

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    def case(request: Request, case_id: str) -> Response:
        session = console.person(request)
        case_id = console.checked_id(session, case_id)
        summary = console.ask(session, lambda ledger: ledger.case_summary(case_id))
        if summary is None:  # erased (it answers so), or none of this agency's
            raise Answered(erased_or_missing(console, session, case_id))
        return console.page("case.html.j2", session.account.language, session, case=summary)

    @app.post("/cases/{case_id}/open", response_class=HTMLResponse)
    def open_case(request: Request, case_id: str, csrf: str = Form("")) -> Response:
        """Unseal what the agency may read: the ledger logs this read as an access entry."""
        session = console.poster(request, csrf)
        case_id = console.checked_id(session, case_id)
        opened = console.ask(session, lambda ledger: ledger.read_case(case_id))
        log.info("console sealed data read account=%s case=%s", session.account.id, case_id)
        return console.page("opened.html.j2", session.account.language, session, case=opened)

    # -- accounts (supervisors) ------------------------------------------------------------------

    def supervisor(request: Request, csrf: str | None = None) -> Session:
        """A supervisor of the agency (and, for a form, its CSRF token), or a refusal."""
        session = console.person(request) if csrf is None else console.poster(request, csrf)
        return console.in_role(session, "supervisor", "only a supervisor manages accounts")

    def confirmed_supervisor(request: Request, csrf: str) -> Session:
        """A supervisor who confirmed it was them in the last minutes: a session left open
        on a shared computer cannot manage anyone's account."""
        session = supervisor(request, csrf)
        if not session.confirmed(console.accounts.clock()):
            message = "confirm it is you first: your password and code again"
            raise Answered(console.page("error.html.j2", session.account.language, session,
                                        403, message=message))  # fmt: skip
        return session

    @app.post("/accounts/confirm", response_class=HTMLResponse)
    def confirm(
        request: Request, csrf: str = Form(""), mine: str = Form(""), code: str = Form("")
    ) -> Response:
        session = supervisor(request, csrf)
        try:
            console.accounts.confirm_person(
                request.cookies.get(SESSION_COOKIE), session.account.id, mine, code or None
            )
        except AccountError as exc:
            return console.page("error.html.j2", session.account.language, session, 403,
                                message=exc.message)  # fmt: skip
        return RedirectResponse("/accounts", status_code=303)

    @app.get("/accounts", response_class=HTMLResponse)
    def accounts(request: Request) -> Response:
        session = supervisor(request)
        return console.page("accounts.html.j2", session.account.language, session,
                            accounts=console.accounts.list(),
                            confirmed=session.confirmed(console.accounts.clock()))  # fmt: skip

    @app.post("/accounts", response_class=HTMLResponse)
    def create_account(
        request: Request,
        csrf: str = Form(""),
        username: str = Form(""),
        name: str = Form(""),
        role: str = Form("caseworker"),
        language: str = Form("es"),
        token: str = Form(""),
    ) -> Response:
        """A supervisor opens an account for a colleague, bound to the ledger token the
        ledger's admin issued to that person (checked with the ledger: live, this agency's,
        of the role chosen); the one-time password is shown once here, and must be changed
        at the first login (a supervisor's TOTP secret too)."""
        session = confirmed_supervisor(request, csrf)
        password = secrets.token_urlsafe(12)
        try:
            checked(token, role)
            account, secret = console.accounts.create(
                username, name.strip() or username, role, password, token.strip(),
                chosen(language, default), must_change=True,
            )  # fmt: skip
        except AccountError as exc:
            return console.page("error.html.j2", session.account.language, session, 422,
                                message=exc.message, params=exc.params)  # fmt: skip
        log.info("console account created account=%s by=%s", account.id, session.account.id)
        return console.page("account-created.html.j2", session.account.language, session,
                            created=account, password=password, secret=secret)  # fmt: skip

    def checked(token: str, role: str) -> str:
        """The id of a person's ledger token, checked with the ledger (AccountError if not)."""
        token = token.strip()
        if not token.startswith("lgr_"):
            raise AccountError("paste the person's own ledger token (it starts with lgr_)")
        with console.as_token(token) as ledger:
            return check_token(ledger, role, console.agency_name)

    def revoke(session: Session, target: Account) -> None:
        """End the ledger token of a disabled account, with the supervisor's own token: the
        person can no longer act through the API either. One the ledger refuses already
        (revoked, expired) needs nothing."""
        with console.ledger(target) as theirs:
            try:
                token_id = str(theirs.whoami()["id"])
            except LedgerHTTPError as exc:
                if exc.status == 401:
                    return
                raise Answered(console.ledger_refused(session, exc)) from None
            except httpx.TransportError as exc:
                raise Answered(console.ledger_refused(session, exc)) from None
        console.ask(session, lambda ledger: ledger.revoke_token(token_id))

    @app.post("/accounts/{account_id}/{action}", response_class=HTMLResponse)
    def account_action(
        request: Request,
        account_id: str,
        action: str,
        csrf: str = Form(""),
        password: str = Form(""),
        token: str = Form(""),
    ) -> Response:
        """Disable (which revokes the person's ledger token too), enable (bound to a new
        token, the old one being revoked) or reset the password of a colleague's account."""
        session = confirmed_supervisor(request, csrf)
        if account_id == session.account.id:  # another supervisor does it, not oneself
            return console.page("error.html.j2", session.account.language, session, 403,
                                message="another supervisor manages your own account")  # fmt: skip
        target = console.accounts.get(account_id)
        if target is None or action not in ("disable", "enable", "reset"):
            return console.page("error.html.j2", session.account.language, session, 404,
                                message="no such account")  # fmt: skip
        try:
            if action == "reset":
                console.accounts.reset_password(account_id, password)
            elif action == "disable":
                console.accounts.set_disabled(account_id, True)  # first: its sessions end now
                revoke(session, target)
            else:
                checked(token, target.role)
                console.accounts.set_token(account_id, token.strip())
                console.accounts.set_disabled(account_id, False)
        except AccountError as exc:
            return console.page("error.html.j2", session.account.language, session, 422,
                                message=exc.message, params=exc.params)  # fmt: skip
        log.info("console account %s account=%s by=%s", action, account_id, session.account.id)
        return RedirectResponse("/accounts", status_code=303)

    @app.get("/password", response_class=HTMLResponse)
    def password_form(request: Request) -> Response:
        session = console.person(request)
        return console.page("password.html.j2", session.account.language, session)

    @app.post("/password", response_class=HTMLResponse)
    def change_password(
        request: Request,
        csrf: str = Form(""),
        current: str = Form(""),
        new: str = Form(""),
        again: str = Form(""),
    ) -> Response:
        session = console.poster(request, csrf)
        try:
            if new != again:
                raise AccountError("the two new passwords differ")
            console.accounts.change_password(session.account.id, current, new)
        except AccountError as exc:
            return console.page("password.html.j2", session.account.language, session, 422,
                                error=exc.message, params=exc.params)  # fmt: skip
        first_login = console.settings.state_dir / "first-login"
        if first_login.exists():  # the bootstrap's one-time login: used, so gone
            first_login.unlink()
        log.info("console password changed account=%s", session.account.id)
        return RedirectResponse(home_of(session.account), status_code=303)

    @app.get("/totp", response_class=HTMLResponse)
    def totp_page(request: Request) -> Response:
        session = console.person(request)
        return console.page("totp.html.j2", session.account.language, session, secret=None)

    @app.post("/totp", response_class=HTMLResponse)
    def totp(
        request: Request, csrf: str = Form(""), code: str = Form(""), step: str = Form("")
    ) -> Response:
        """A second factor for anyone who wants one: a secret to enrol, then its first code."""
        session = console.poster(request, csrf)
        if step != "confirm":
            secret = console.accounts.start_totp(session.account.id)
            return console.page("totp.html.j2", session.account.language, session,
                                secret=secret)  # fmt: skip
        try:
            console.accounts.confirm_totp(session.account.id, code)
        except AccountError as exc:
            return console.page("error.html.j2", session.account.language, session, 422,
                                message=exc.message, params=exc.params)  # fmt: skip
        log.info("console second factor enrolled account=%s", session.account.id)
        return RedirectResponse(home_of(session.account), status_code=303)

    @app.post("/language")
    def language(request: Request, csrf: str = Form(""), lang: str = Form("")) -> Response:
        session = console.poster(request, csrf)
        console.accounts.set_language(session.account.id, chosen(lang, session.account.language))
        return RedirectResponse(home_of(session.account), status_code=303)

    app.router.on_shutdown.append(console.close)  # the pool of connections to the ledger
    app.state.console = console
    return app
