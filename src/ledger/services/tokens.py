"""Authentication and tokens: who is calling (step 1 of the refusal order), and the admin's
tokens, one per person, stored only as hashes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.contract.roles import AGENCY_ROLES, ROLES
from ledger.contract.vocabulary import format_timestamp, parse_timestamp
from ledger.errors import BadRequest, Forbidden, Invalid, LedgerError, NotFound, Unauthorized
from ledger.services.paging import Key, Page
from ledger.storage.base import Store, Token

log = logging.getLogger("ledger")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's opaque id, its role and its agency (if any)."""

    token_id: str
    role: str
    agency: str | None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(b"ledger-token-v1\n" + token.encode()).digest()


class Tokens:
    """Bearer tokens: checked on every request, issued and revoked by an admin."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store, self.clock = store, clock

    def authenticate_many(self, bearers: Sequence[str | None]) -> list[Principal | LedgerError]:
        """Step 1 for several bearer tokens with one read (the API checks the tokens of
        concurrent requests together): a principal or the refusal, in order."""
        hashes = {bearer: hash_token(bearer) for bearer in bearers if bearer}
        tokens = self.store.tokens_by_hash(list(hashes.values())) if hashes else {}
        now = format_timestamp(self.clock())
        principals: list[Principal | LedgerError] = []
        for bearer in bearers:
            token = tokens.get(hashes[bearer]) if bearer else None
            if not bearer:
                principals.append(Unauthorized("send a token: Authorization: Bearer <token>"))
            elif token is None or token.revoked:
                principals.append(Unauthorized("the token is not valid"))
            elif token.expires_at is not None and token.expires_at <= now:
                principals.append(Unauthorized("the token has expired"))
            else:
                principals.append(Principal(token.id, token.role, token.agency))
        return principals

    def issue(
        self, role: str, agency: str | None, label: str, expires_at: str | None = None
    ) -> tuple[str, str]:
        """Create a token and store only its hash; returns (token, id)."""
        secret = "lgr_" + secrets.token_urlsafe(32)
        token_id = "tok_" + secrets.token_hex(8)
        stored = self.store.add_token(
            Token(token_id, role, agency, label, expires_at, False),
            hash_token(secret),
            format_timestamp(self.clock()),
        )
        if not stored:  # removed meanwhile (the check and the insert are one statement)
            raise Invalid("agency is not a registered agency")
        return secret, token_id

    def create(
        self,
        principal: Principal,
        agency: str | None,
        role: str,
        label: str,
        expires_at: str | None = None,
    ) -> dict[str, str]:
        """Admin: one token per person, with a role, (for agency staff) an agency, and
        optionally an expiry time."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may create tokens")
        if role not in ROLES:
            raise BadRequest(f"role must be one of: {', '.join(ROLES)}")
        if role in AGENCY_ROLES and agency is None:
            raise BadRequest(f"a {role} token needs an agency")
        if agency is not None:
            found = self.store.agency(agency)
            if found is None or found.removed_at is not None:
                raise Invalid("agency is not a registered agency")
        if expires_at is not None:
            try:
                if parse_timestamp(expires_at) <= self.clock():
                    raise Invalid("expires_at must be in the future")
            except ValueError as exc:
                raise BadRequest("expires_at must be YYYY-MM-DDTHH:MM:SSZ") from exc
        secret, token_id = self.issue(role, agency, label, expires_at)
        log.info("token created id=%s role=%s agency=%s", token_id, role, agency)
        return {"token": secret, "id": token_id}

    def revoke(self, principal: Principal, token_id: str) -> None:
        """Revoke a token (it answers 401 from now on): an admin any token, a supervisor a
        staff token of its own agency (a colleague who left, an account closed in the
        agency's console) without waiting for the ledger's operator."""
        if principal.role == "supervisor":
            token = self.store.token(token_id)
            if token is None or token.agency != principal.agency or token.role not in AGENCY_ROLES:
                raise Forbidden("a supervisor may revoke only its own agency's staff tokens")
        elif principal.role != "admin":
            raise Forbidden("only an admin or a supervisor of the token's agency may revoke it")
        if not self.store.revoke_tokens(token_id=token_id, at=format_timestamp(self.clock())):
            raise NotFound("no such active token")
        log.info("token revoked id=%s by=%s", token_id, principal.token_id)

    def listing(self, principal: Principal, page: Page) -> tuple[list[dict[str, Any]], Key | None]:
        """Admin: a page of every token (revoked and expired ones too), in id order, with
        what each is for and its times, never its secret (`ledger tokens list`)."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may list tokens")
        after = None if page.after is None else str(page.after[0])
        rows = self.store.list_tokens(after, page.limit + 1)
        items: list[dict[str, Any]] = [
            {"id": t.id, "role": t.role, "agency": t.agency, "label": t.label,
             "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at}
            for t in rows[: page.limit]
        ]  # fmt: skip
        return items, ((rows[page.limit - 1].id,) if len(rows) > page.limit else None)

    @staticmethod
    def whoami(principal: Principal) -> dict[str, str | None]:
        """What the ledger knows of the calling token: its id, role and agency (a console
        checks the token a person hands it before binding it to their account)."""
        return {"id": principal.token_id, "role": principal.role, "agency": principal.agency}
