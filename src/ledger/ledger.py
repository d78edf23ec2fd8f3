"""The Ledger: the composition root. It builds each service once, with the shared parts
(one `Cases` cache, one set of case locks, one log time) handed in, and keeps the public
methods the API, the CLI and the tests call, each handed to its service:

- `services.tokens`: authentication (step 1) and the admin's tokens;
- `services.registry`: agencies and their signing keys;
- `services.ingest`: submissions parsed, decided in the contract's order, planned, committed;
- `services.erasure`: key destruction, receipts, and recovery after a crash;
- `services.access`: which cases a caller may see, and the logged unsealed read;
- `services.notices`, `services.webhooks`: who was told of what, and agencies' endpoints
  (delivered by `services.delivery`, a background loop the API or `ledger worker` runs).

Data flows one way: api -> ledger -> services -> (contract, log, storage). Nothing here
knows about HTTP; refusals are typed errors from `ledger.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ledger.concurrency import KeyedLocks
from ledger.contract import crypto
from ledger.contract.case import Case, Cases
from ledger.errors import LedgerError
from ledger.log.service import LogService
from ledger.services.access import CaseAccess
from ledger.services.erasure import Erasures
from ledger.services.ingest import Ingest
from ledger.services.keystore import KeyStore
from ledger.services.logtime import LogTime, utc_now
from ledger.services.notices import Notices, Timers
from ledger.services.outbound import OutboundPolicy
from ledger.services.paging import Page
from ledger.services.registry import Registry
from ledger.services.submissions import Incoming, Outcome, parse, parse_batch
from ledger.services.tokens import Principal, Tokens
from ledger.services.webhooks import Webhooks, WebhookSecrets
from ledger.storage.base import Store


class Ledger:
    """Append signed, sealed, consent-gated events; read what the caller may see."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        log_key: crypto.SigningKey,
        receipt_key: crypto.SigningKey | None = None,
        *,
        freshness_s: int = 300,
        clock: Callable[[], datetime] = utc_now,
        outbound: OutboundPolicy = OutboundPolicy(),
    ) -> None:
        origin = store.get_meta("origin")
        if origin is None:
            raise RuntimeError("the ledger is not initialised: run `ledger init`")
        self.store, self.keys, self.clock = store, keys, clock
        now = lambda: self.clock()  # noqa: E731 (tests move the clock on the ledger)
        self.cases = Cases(store.recorder, store.snapshots, store.events_after)
        self.time = LogTime(now)  # the time entries are recorded at
        self.log = LogService(store, log_key, origin, now)
        self.access = CaseAccess(self.cases, keys, store, self.time)
        self.tokens = Tokens(store, now)
        self.registry = Registry(store, self.time, origin, freshness_s=freshness_s, clock=now)
        self.erasures = Erasures(store, keys, self.cases, self.log, receipt_key, now)
        self.notices = Notices(store, self.access)
        self.webhook_secrets = WebhookSecrets(keys.kek_path.with_name("webhooks.key"))
        self.webhooks = Webhooks(store, self.webhook_secrets, outbound, now)
        self.timers = Timers(store, self.cases, now)
        self.ingest = Ingest(
            store,
            keys,
            self.cases,
            self.access,
            self.registry,
            self.erasures,
            self.time,
            origin=origin,
            freshness_s=freshness_s,
            locks=KeyedLocks(),
        )

    # Set once, held by the services that use them: read-only here.
    @property
    def origin(self) -> str:
        return self.registry.origin

    @property
    def freshness_s(self) -> int:
        return self.registry.freshness_s

    @property
    def receipt_key(self) -> crypto.SigningKey | None:
        return self.erasures.receipt_key

    # -- authentication and tokens -------------------------------------------------------------

    def authenticate(self, bearer: str | None) -> Principal:
        """Step 1: a known, unexpired, unrevoked token, or Unauthorized."""
        (principal,) = self.tokens.authenticate_many([bearer])
        if isinstance(principal, LedgerError):
            raise principal
        return principal

    def authenticate_many(self, bearers: Sequence[str | None]) -> list[Principal | LedgerError]:
        return self.tokens.authenticate_many(bearers)

    def issue_token(
        self, role: str, agency: str | None, label: str, expires_at: str | None = None
    ) -> tuple[str, str]:
        return self.tokens.issue(role, agency, label, expires_at)

    def create_token(
        self,
        principal: Principal,
        agency: str | None,
        role: str,
        label: str,
        expires_at: str | None = None,
    ) -> dict[str, str]:
        return self.tokens.create(principal, agency, role, label, expires_at)

    def revoke_token(self, principal: Principal, token_id: str) -> None:
        self.tokens.revoke(principal, token_id)

    # -- agencies and keys ---------------------------------------------------------------------

    def agencies(self) -> list[dict[str, Any]]:
        return self.registry.directory()

    def register_agency(
        self, principal: Principal, agency_id: str, name: str, kind: str, verify_key: str
    ) -> dict[str, Any]:
        return self.registry.register_agency(principal, agency_id, name, kind, verify_key)

    def remove_agency(self, principal: Principal, agency_id: str) -> dict[str, Any]:
        return self.registry.remove_agency(principal, agency_id)

    def add_key(
        self,
        principal: Principal,
        agency_id: str,
        verify_key: str,
        signatures: list[dict[str, str]],
    ) -> dict[str, Any]:
        return self.registry.add_key(principal, agency_id, verify_key, signatures)

    def revoke_key(
        self, principal: Principal, agency_id: str, key_id: str, compromised_since: int | None
    ) -> dict[str, Any]:
        return self.registry.revoke_key(principal, agency_id, key_id, compromised_since)

    # -- events --------------------------------------------------------------------------------

    def submit(self, principal: Principal, raw: bytes) -> tuple[int, dict[str, Any]]:
        return self.ingest.submit(principal, raw)

    def submit_batch(self, principal: Principal, raw: bytes) -> list[tuple[int, dict[str, Any]]]:
        return self.ingest.submit_batch(principal, raw)

    def submit_many(self, items: Sequence[Incoming]) -> list[Outcome]:
        return self.ingest.submit_many(items)

    parse = staticmethod(parse)
    parse_batch = staticmethod(parse_batch)

    # -- erasure -------------------------------------------------------------------------------

    def recover(self, orphan_age_s: int = 900, erasure_age_s: int = 0) -> int:
        return self.erasures.recover(orphan_age_s, erasure_age_s)

    def erasure_receipt(self, principal: Principal, case_id: str) -> str:
        return self.erasures.receipt(principal, case_id)

    # -- reads ---------------------------------------------------------------------------------

    def read_case(self, principal: Principal, case_id: str) -> dict[str, Any]:
        return self.access.read_case(principal, case_id)

    def live_case(self, case_id: str) -> tuple[Case, bytes, list[dict[str, Any]]] | None:
        return self.access.live_case(case_id)

    # -- notices -------------------------------------------------------------------------------

    def agency_notices(self, principal: Principal, after: int, limit: int) -> dict[str, Any]:
        return self.notices.for_agency(principal, after, limit)

    def case_notices(self, principal: Principal, case_id: str) -> dict[str, Any]:
        return self.notices.of_case(principal, case_id)

    def register_webhook(
        self, principal: Principal, agency_id: str, url: str, replay: bool = False
    ) -> dict[str, Any]:
        return self.webhooks.register(principal, agency_id, url, replay)

    def agency_webhooks(self, principal: Principal, agency_id: str) -> dict[str, Any]:
        return self.webhooks.list(principal, agency_id)

    def rotate_webhook_secret(
        self, principal: Principal, agency_id: str, hook_id: str
    ) -> dict[str, Any]:
        return self.webhooks.rotate(principal, agency_id, hook_id)

    def remove_webhook(self, principal: Principal, agency_id: str, hook_id: str) -> None:
        self.webhooks.remove(principal, agency_id, hook_id)

    def dead_letters(
        self, principal: Principal, agency_id: str, hook_id: str, page: Page | None = None
    ) -> dict[str, Any]:
        return self.webhooks.dead_letters(principal, agency_id, hook_id, page)
