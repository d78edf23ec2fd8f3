"""The registry of agencies and their signing keys: each change is a registry entry in the
log (docs/contract.md, the log), with the rows that index it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ledger.concurrency import WRITE_ATTEMPTS
from ledger.contract import crypto
from ledger.contract.canonical import jcs
from ledger.contract.entries import key_change_message
from ledger.contract.vocabulary import AGENCY_RE, format_timestamp, is_agency_id, parse_timestamp
from ledger.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    VerificationError,
    WriteConflict,
)
from ledger.log.merkle import leaf_hash
from ledger.services.logtime import LogTime
from ledger.services.tokens import Principal
from ledger.storage.base import (
    AgencyRow,
    Commit,
    ConflictError,
    KeyRow,
    NewEntry,
    Revocation,
    StaleTime,
    Store,
)

log = logging.getLogger("ledger")


class Registry:
    """Agencies and their keys: registered, added, revoked, removed; and the key an event
    names, if it is a live key of its agency."""

    def __init__(
        self,
        store: Store,
        time: LogTime,
        origin: str,
        *,
        freshness_s: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.time, self.origin = store, time, origin
        self.freshness_s, self.clock = freshness_s, clock

    def verify_key(self, agency: str, key_id: str) -> crypto.VerifyKey | None:
        """The agency's live key with this id, or None (revoked, another's, unknown)."""
        record = self.store.agency_key(key_id)
        if record is None or record.agency != agency or record.revoked_at is not None:
            return None
        return crypto.parse_verify_key(record.line)

    def directory(self) -> list[dict[str, Any]]:
        """Every registered agency: id, name, type, and whether it can be named now (live:
        not removed, with a current key). What the log's registry entries say, for anyone
        with a token: a console offers these as recipients."""
        agencies = self.store.agencies()
        live = self.store.live_agencies([a.id for a in agencies])
        return [
            {"id": a.id, "name": a.name, "type": a.type, "active": a.id in live} for a in agencies
        ]

    def register_agency(
        self, principal: Principal, agency_id: str, name: str, kind: str, verify_key: str
    ) -> dict[str, Any]:
        """Admin: register an agency with its first key (a registry entry in the log)."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may register agencies")
        if not is_agency_id(agency_id):
            raise BadRequest(f"id must match {AGENCY_RE}")
        key = self._agency_key_line(agency_id, verify_key)
        if self.store.agency(agency_id) is not None:
            raise Conflict("an agency with this id is already registered")
        position = self._append(
            principal,
            "agency.registered",
            agency_id,
            key.line(),
            [],
            "an agency or key with this id is already registered",
            agencies=[AgencyRow(agency_id, name, kind)],
            keys=[KeyRow(key.key_id, agency_id, key.line(), 0)],
        )
        log.info("agency registered agency=%s index=%d", agency_id, position)
        return {"id": agency_id, "index": position}

    def remove_agency(self, principal: Principal, agency_id: str) -> dict[str, Any]:
        """Admin: remove an agency. Its keys are revoked in the log (so its history stays
        verifiable and nothing new can be signed) and its tokens stop working."""
        if principal.role != "admin":
            raise Forbidden("only an admin token may remove agencies")
        found = self.store.agency(agency_id)
        if found is None or found.removed_at is not None:
            raise NotFound("no such agency")
        positions = [
            self.revoke_key(principal, agency_id, key.key_id, None)["index"]
            for key in self.store.agency_keys(agency_id)
            if key.revoked_at is None
        ]
        # Keys first (a commit naming the agency is refused once none is live), then the
        # removal and its tokens in one transaction (no token is created after it).
        revoked = self.store.remove_agency(agency_id, format_timestamp(self.clock()))
        log.info("agency removed agency=%s keys=%d tokens=%d", agency_id, len(positions), revoked)
        return {"id": agency_id, "revoked_keys": positions, "revoked_tokens": revoked}

    def add_key(
        self,
        principal: Principal,
        agency_id: str,
        verify_key: str,
        signatures: list[dict[str, str]],
    ) -> dict[str, Any]:
        """Register a new agency key, signed by a current key of the agency and by itself."""
        self._may_manage_keys(principal, agency_id)
        key = self._agency_key_line(agency_id, verify_key)
        if self.store.agency_key(key.key_id) is not None:
            raise Conflict("this key is already registered")
        current = {
            k.key_id: crypto.parse_verify_key(k.line)
            for k in self.store.agency_keys(agency_id)
            if k.revoked_at is None
        }
        now = self.clock()
        signers = set()
        for sig in signatures:
            signer = key if sig["key"] == key.key_id else current.get(sig["key"])
            if signer is None:
                raise Invalid("signatures name a key that is not a current key of the agency")
            try:
                skew = abs((parse_timestamp(sig["signed_at"]) - now).total_seconds())
                raw = crypto.b64decode_strict(sig["signature"])
            except ValueError as exc:
                raise Invalid("signatures need signed_at timestamps and base64 signatures") from exc
            if skew > self.freshness_s:
                raise VerificationError("a key-change signature is not fresh; sign again")
            message = key_change_message(self.origin, agency_id, key.line(), sig["signed_at"])
            try:
                crypto.verify(signer, message, raw)
            except crypto.BadSignature as exc:
                raise VerificationError("a key-change signature does not verify") from exc
            signers.add("new" if signer == key else "current")
        if signers != {"new", "current"}:
            raise VerificationError("a new key needs signatures by a current key and by itself")
        position = self._append(
            principal,
            "key.added",
            agency_id,
            key.line(),
            signatures,
            "this key is already registered",
            keys=[KeyRow(key.key_id, agency_id, key.line(), 0)],
        )
        log.info("key added agency=%s key=%s index=%d", agency_id, key.key_id, position)
        return {"id": agency_id, "key": key.key_id, "index": position}

    def revoke_key(
        self, principal: Principal, agency_id: str, key_id: str, compromised_since: int | None
    ) -> dict[str, Any]:
        """Revoke an agency key; events signed with it are refused from now on."""
        self._may_manage_keys(principal, agency_id)
        record = self.store.agency_key(key_id)
        if record is None or record.agency != agency_id:
            raise NotFound("no such key for this agency")
        if record.revoked_at is not None:
            raise Conflict("the key is already revoked")
        if compromised_since is not None and not 0 <= compromised_since <= self.store.log_size():
            raise BadRequest("compromised_since must be a log position or null")
        position = self._append(
            principal,
            "key.revoked",
            agency_id,
            record.line,
            [],
            "the key is already revoked",
            revocations=[Revocation(key_id, 0)],
            compromised_since=compromised_since,
        )
        log.info("key revoked agency=%s key=%s index=%d", agency_id, key_id, position)
        return {"id": agency_id, "key": key_id, "index": position}

    @staticmethod
    def _agency_key_line(agency_id: str, line: str) -> crypto.VerifyKey:
        """A C2SP verifier key line named after the agency (422 otherwise)."""
        try:
            key = crypto.parse_verify_key(line)
        except crypto.BadKeyLine as exc:
            raise Invalid(f"verify_key: {exc}") from exc
        if key.name != agency_id:
            raise Invalid("verify_key's name must equal the agency id")
        return key

    def _may_manage_keys(self, principal: Principal, agency_id: str) -> None:
        if principal.role == "admin" or (
            principal.role == "supervisor" and principal.agency == agency_id
        ):
            if self.store.agency(agency_id) is None:
                raise NotFound("no such agency")
            return
        raise Forbidden("keys are managed by an admin or by a supervisor of the agency")

    def _append(
        self,
        principal: Principal,
        action: str,
        agency_id: str,
        key_line: str,
        signatures: list[dict[str, str]],
        refused: str,
        *,
        agencies: Sequence[AgencyRow] = (),
        keys: Sequence[KeyRow] = (),
        revocations: Sequence[Revocation] = (),
        **extra: Any,
    ) -> int:
        """Append a registry entry with its rows; its position. A commit that met a later
        time in the log is made again at that time; any other conflict is
        `Conflict(refused)`."""
        for _attempt in range(WRITE_ATTEMPTS):
            recorded_at = format_timestamp(self.time.now())
            entry = jcs({
                "kind": "registry", "action": action, "agency": agency_id, "key": key_line,
                "signatures": signatures, "actor": principal.token_id,
                "recorded_at": recorded_at, **extra,
            })  # fmt: skip
            commit = Commit(
                entries=[NewEntry("registry", entry, leaf_hash(entry), None, agency_id)],
                agencies=agencies,
                keys=keys,
                revocations=revocations,
                recorded_at=recorded_at,
            )
            try:
                (position,) = self.store.append(commit)
                return position
            except StaleTime as exc:
                self.time.saw(exc.latest)
            except ConflictError as exc:
                raise Conflict(refused) from exc
        raise WriteConflict("the log kept moving past this change; retry")
