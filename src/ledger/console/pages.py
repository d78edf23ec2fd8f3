"""What the console's pages share: rendering in the person's language, the session of a
request, the ledger as that person (their own token, the agency's key), and refusals in
plain words."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ledger.client import LedgerClient, LedgerHTTPError
from ledger.console.accounts import Account, AccountError, Accounts, Session, csrf_matches
from ledger.console.i18n import LANGUAGES, translations
from ledger.console.settings import ConsoleSettings
from ledger.contract import crypto
from ledger.contract.vocabulary import is_uuid4

log = logging.getLogger("ledger.console")
T = TypeVar("T")

# The consent gate's refusals (contract/gates.py), each in plain words: why, and what would
# make it possible. Matched on the start of the ledger's message.
EXPLAINED = (
    ("the consent was withdrawn",
     "The survivor withdrew this consent: nothing more may be sent under it.",
     "Only a new consent, if the survivor gives it, would allow it."),
    ("the consent has expired",
     "This consent has expired.",
     "Record a new consent with the survivor if they agree."),
    ("the consent does not name this recipient",
     "This consent does not name that agency.",
     "Record a consent that names it, if the survivor agrees, or choose an agency it names."),
    ("the consent does not cover the purpose",
     "This consent does not allow this use of the information.",
     "Record a consent for this purpose, if the survivor agrees."),
    ("the consent does not cover every category",
     "This consent does not cover all the information you chose.",
     "Send only what it covers, or ask the survivor for a consent that covers the rest."),
    ("in a case of a child",
     "In the case of a child, or when the age is unknown, a consent counts only when a guardian"
     " or guardian ad litem gave it with the child's own assent.",
     "Record the guardian's consent with the child's assent (or the exemption under 6)."),
)  # fmt: skip

HERE = Path(__file__).parent
SESSION_COOKIE = "console_session"
LOGIN_COOKIE = "console_login"  # the login form's double-submit CSRF token
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self';"
        " img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


# The pages a monitor account may open: the statistics, its own account's, and logging out.
MONITOR_PAGES = ("/statistics", "/password", "/totp", "/logout", "/language")


def monitor_may_open(path: str) -> bool:
    return any(path == p or path.startswith((p + "/", p + ".")) for p in MONITOR_PAGES)


def home_of(account: Account) -> str:
    """Where a person lands: the statistics for a monitor, the cases for agency staff."""
    return "/statistics" if account.role == "monitor" else "/cases"


DIRECTORY_S = 60.0  # how long the list of registered agencies is reused before asked again


def check_token(ledger: LedgerClient, role: str, agency: str | None) -> str:
    """The id of a person's ledger token, if it is a live `role` token of `agency`; otherwise
    AccountError saying what is wrong with it (a console never binds an account to a token
    the ledger would refuse, or one of another role or agency)."""
    try:
        found = ledger.whoami()
    except LedgerHTTPError as exc:
        if exc.status == 401:
            raise AccountError("the ledger does not accept this token") from None
        raise AccountError("the ledger could not check this token; try again") from None
    except httpx.TransportError:
        raise AccountError("the ledger could not be reached; try again") from None
    if found["agency"] != agency:
        raise AccountError("this token is not for this agency")
    if found["role"] != role:
        raise AccountError("this token is a {role} token", role=found["role"])
    return str(found["id"])


def download(body: str | bytes, media_type: str, filename: str) -> Response:
    """A file to save (a CSV, a PDF): its name given, never shown in the page."""
    disposition = f'attachment; filename="{filename}"'
    return Response(body, media_type=media_type, headers={"Content-Disposition": disposition})


def when(timestamp: str | None) -> str:
    """`2026-12-05T19:32:17Z` as people read it: `2026-12-05 19:32 UTC`."""
    if not timestamp:
        return "?"
    return f"{timestamp[:10]} {timestamp[11:16]} UTC" if len(timestamp) > 10 else timestamp


class Answered(Exception):
    """A page answered before the route's end (the login page, a refusal in plain words):
    the app returns `response` as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered")
        self.response = response


class MustChange(Exception):
    """The session's password must be changed first: answered with a redirect to /password."""


class Console:
    """What the pages share: settings, accounts, the agency's key and the way to the ledger."""

    def __init__(
        self,
        settings: ConsoleSettings,
        accounts: Accounts,
        agency_key: crypto.SigningKey | None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings, self.accounts, self.agency_key = settings, accounts, agency_key
        self.transport = transport  # to the ledger (tests give the ledger app's own)
        # One pool of connections to the ledger for every person's requests (each request
        # carries its person's token).
        self.pool = httpx.Client(base_url=settings.ledger_url, transport=transport, timeout=15.0)
        self.origin: str | None = None  # the log's, learnt from the first signed submission
        self._directory: tuple[float, list[dict[str, Any]]] | None = None
        # Secure cookies unless said otherwise; by default off only when the console listens
        # on loopback alone (a trial on one machine, over plain HTTP).
        self.secure = (
            settings.secure_cookies
            if settings.secure_cookies is not None
            else settings.host not in LOOPBACK
        )
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["j2", "html"]),
        )
        self.templates.filters["when"] = when

    def ledger(self, account: Account) -> LedgerClient:
        """The ledger as this person: their own token, the agency's signing key."""
        return self.as_token(self.accounts.ledger_token(account))

    def as_token(self, token: str) -> LedgerClient:
        return LedgerClient(
            self.settings.ledger_url, token, self.agency_key, pool=self.pool, origin=self.origin
        )

    def close(self) -> None:
        self.pool.close()

    def directory(self, session: Session) -> list[dict[str, Any]]:
        """The agencies registered with the ledger (asked again after `DIRECTORY_S`)."""
        now = time.monotonic()
        if self._directory is None or now - self._directory[0] > DIRECTORY_S:
            self._directory = (now, self.ask(session, lambda ledger: ledger.agencies()))
        return self._directory[1]

    def recipients(self, session: Session) -> list[dict[str, Any]]:
        """The agencies a consent, referral or share may name: the registered ones that are
        active, other than this one."""
        mine = self.agency_name
        return [a for a in self.directory(session) if a["active"] and a["id"] != mine]

    def page(
        self,
        name: str,
        language: str,
        session: Session | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        trans = translations(language)
        html = self.templates.get_template(name).render(
            _=trans.gettext,
            lang=language,
            languages=LANGUAGES,
            session=session,
            account=None if session is None else session.account,
            idle_s=int(self.accounts.policy.idle_s),
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def current(self, request: Request) -> Session | None:
        """The caller's live session, if any (its idle time restarts). A person whose
        password is a first or reset one changes it before anything else (`MustChange`)."""
        session = self.accounts.session(request.cookies.get(SESSION_COOKIE))
        exempt = request.url.path in ("/password", "/logout")
        if session is not None and session.account.must_change and not exempt:
            raise MustChange
        return session

    def set_cookie(self, response: Response, name: str, value: str) -> None:
        """The console's cookies: HttpOnly, SameSite=Strict, Secure unless said otherwise."""
        response.set_cookie(
            name, value, httponly=True, samesite="strict", secure=self.secure, path="/"
        )

    @staticmethod
    def to_login(where: str = "/login") -> RedirectResponse:
        response = RedirectResponse(where, status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def refused(self, session: Session, status: int = 403) -> HTMLResponse:
        """A form without its session's CSRF token: nothing was done."""
        return self.page(
            "error.html.j2",
            session.account.language,
            session,
            status,
            message="this form expired; go back, reload the page and try again",
        )

    def ledger_refused(
        self, session: Session, exc: LedgerHTTPError | httpx.TransportError
    ) -> HTMLResponse:
        """What the ledger answered, in plain words (never a bare status code)."""
        detail = None
        if isinstance(exc, httpx.TransportError):
            status, message = (
                503,
                "the ledger could not be reached; check the connection and try again",
            )
        elif exc.status in (404, 410):
            status, message = exc.status, "no such case for your agency, or it was erased"
        elif exc.status == 401:
            status, message = (
                401,
                "the ledger no longer accepts your account's token; ask a supervisor",
            )
        elif exc.status in (403, 409, 422):
            status, message = exc.status, "the ledger refused this, and said why:"
            detail = str(exc.body.get("message", "")) if isinstance(exc.body, dict) else None
            for start, why, fix in EXPLAINED:
                if detail and detail.startswith(start):
                    return self.page("refused.html.j2", session.account.language, session,
                                     status, why=why, fix=fix, detail=detail)  # fmt: skip
        else:
            status, message = 502, "the ledger could not answer; try again in a moment"
        return self.page("error.html.j2", session.account.language, session, status,
                         message=message, detail=detail)  # fmt: skip

    # -- what every route starts with ----------------------------------------------------

    def person(self, request: Request) -> Session:
        """The logged-in person, or the login page (`Answered`). A monitor (the coordinating
        body) opens the statistics and its own account's pages only (`MONITOR_PAGES`)."""
        session = self.current(request)
        if session is None:
            raise Answered(self.to_login())
        if session.account.role == "monitor" and not monitor_may_open(request.url.path):
            why = "a monitor account sees the statistics only"
            raise Answered(self.page("error.html.j2", session.account.language, session, 403,
                                     message=why))  # fmt: skip
        return session

    def in_role(self, session: Session, role: str, why: str) -> Session:
        """The session if its person has `role`; otherwise `why`, in plain words (403)."""
        if session.account.role != role:
            raise Answered(self.page("error.html.j2", session.account.language, session, 403,
                                     message=why))  # fmt: skip
        return session

    def poster(self, request: Request, csrf: object) -> Session:
        """The logged-in person of a state-changing request whose form carries the session's
        CSRF token; otherwise nothing is done (`Answered`)."""
        session = self.person(request)
        if not csrf_matches(session, csrf):
            raise Answered(self.refused(session))
        return session

    def checked_id(self, session: Session, value: object) -> str:
        """A path or form id the ledger would refuse anyway is answered 404 here, never sent."""
        if not is_uuid4(value):
            raise Answered(self.not_found(session))
        return str(value)

    def ask(self, session: Session, call: Callable[[LedgerClient], T]) -> T:
        """Ask the ledger as this person; a refusal becomes its page in plain words."""
        with self.ledger(session.account) as ledger:
            try:
                return call(ledger)
            except (LedgerHTTPError, httpx.TransportError) as exc:
                raise Answered(self.ledger_refused(session, exc)) from None
            finally:  # the log's origin never changes: learnt once, signed with ever after
                self.origin = self.origin or ledger.known_origin

    @property
    def agency_name(self) -> str | None:
        """The agency this console serves: its signing key's name."""
        return self.agency_key.name if self.agency_key is not None else self.settings.agency

    def not_found(self, session: Session) -> HTMLResponse:
        return self.ledger_refused(session, LedgerHTTPError(404, {"error": "not_found"}))
