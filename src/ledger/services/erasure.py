"""Erasure after its `case.erased` commit: the case key destroyed (crypto-shredding), the
receipt signed, and whatever a crash interrupted finished later (`Recoverer`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ledger.concurrency import Background
from ledger.contract import crypto
from ledger.contract.case import Cases
from ledger.contract.receipts import ErasureReceipt
from ledger.contract.roles import AGENCY_ROLES, LOG_READERS
from ledger.contract.vocabulary import format_timestamp, is_uuid4
from ledger.errors import Conflict, NotFound
from ledger.log.service import LogService
from ledger.services.keystore import KeyStore
from ledger.services.tokens import Principal
from ledger.storage.base import Store

log = logging.getLogger("ledger")


class Erasures:
    """Finishes erasures and hands out their receipts."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        cases: Cases,
        log_service: LogService,
        receipt_key: crypto.SigningKey | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.keys, self.cases, self.log = store, keys, cases, log_service
        self.receipt_key, self.clock = receipt_key, clock

    def finish(self, case_id: str) -> dict[str, Any]:
        """After the `case.erased` commit: destroy the key, then sign the receipt (idempotent).

        Returns the answer's extra members. A failure here leaves the case erased (nothing
        unseals it) and is finished by `recover()`, which the server runs every minute.
        """
        erasure = self.store.erasure(case_id)
        assert erasure is not None
        recorded = self.store.find_event(erasure.event_id)
        extra: dict[str, Any] = dict(recorded.extra) if recorded else {}
        try:
            if not erasure.key_destroyed:
                self.keys.destroy(case_id)
                self.store.drop_receipt_codes(case_id)  # they lead nowhere any more
                self.store.mark_key_destroyed(case_id)
                log.info("case key destroyed case=%s", case_id)
            if erasure.receipt is None and self.receipt_key is not None:
                checkpoint = self.log.sign_checkpoint()
                receipt = ErasureReceipt(
                    self.log.origin,
                    case_id,
                    erasure.position,
                    erasure.erased_at,
                    checkpoint.size,
                    checkpoint.root,
                ).sign(self.receipt_key)
                # The first receipt stored is the receipt (a concurrent recover() may race).
                answer = {**extra, "receipt": receipt}
                extra["receipt"] = self.store.set_receipt(case_id, receipt, answer)
        except Exception as exc:
            log.error(
                "erasure of case=%s not finished (%s); recover() finishes it",
                case_id,
                type(exc).__name__,
            )
        return extra

    def recover(self, orphan_age_s: int = 900, erasure_age_s: int = 0) -> int:
        """Finish what a crash or a failure interrupted: erasures whose key or receipt is
        pending (committed at least `erasure_age_s` ago: a younger one may still be finishing
        in its own request), and keys of new cases whose `case.opened` never committed.
        Returns how many were pending. Run at start-up and then periodically (`Recoverer`)."""
        erased_before = format_timestamp(self.clock() - timedelta(seconds=erasure_age_s))
        pending = [
            e
            for e in self.store.unfinished_erasures()
            if erasure_age_s == 0 or e.erased_at < erased_before
        ]
        for erasure in pending:
            self.finish(erasure.case_id)
        cutoff = format_timestamp(self.clock() - timedelta(seconds=orphan_age_s))
        orphans = 0
        for case_id, wrapped in self.keys.table.unconfirmed(cutoff):
            if self.cases.load(case_id) is None:
                # Compare-and-set: a key taken over since by a new `case.opened` stays.
                orphans += self.keys.discard_unconfirmed(case_id, wrapped)
            else:
                self.keys.confirm(case_id)
        return len(pending) + orphans

    def receipt(self, principal: Principal, case_id: str) -> str:
        """The signed erasure receipt, for staff of related agencies, auditors and admins."""
        # A monitor token reads statistics only, whatever agency it was issued with.
        staff_of_related = (
            principal.role in AGENCY_ROLES
            and principal.agency is not None
            and is_uuid4(case_id)
            and bool(self.store.related([(case_id, principal.agency)]))
        )
        if principal.role not in LOG_READERS and not staff_of_related:
            raise NotFound("no such case for your agency")
        erasure = self.store.erasure(case_id) if is_uuid4(case_id) else None
        if erasure is None:
            if not staff_of_related and (not is_uuid4(case_id) or self.cases.load(case_id) is None):
                raise NotFound("no such case for your agency")
            raise NotFound("the case is not erased")
        if erasure.receipt is None:
            self.finish(case_id)
            erasure = self.store.erasure(case_id)
        if erasure is None or erasure.receipt is None:
            raise Conflict("the receipt is not signed yet; retry shortly")
        return erasure.receipt


class Recoverer(Background):
    """Runs `Erasures.recover()` every `interval_s` seconds in a daemon thread, so an erasure
    whose key destruction failed (the key store briefly unreachable, say) is finished while the
    server runs, not at its next start, and orphaned keys of failed new cases do not pile up."""

    name = "recoverer"

    def __init__(
        self, erasures: Erasures, interval_s: float = 60.0, erasure_age_s: int = 60
    ) -> None:
        super().__init__()
        self.erasures, self.interval_s, self.erasure_age_s = erasures, interval_s, erasure_age_s

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                finished = self.erasures.recover(erasure_age_s=self.erasure_age_s)
                if finished:
                    log.info("recovered %d interrupted erasure(s) or orphaned key(s)", finished)
            except Exception as exc:  # try again next round; say what failed, not the data
                log.error("recoverer: %s", type(exc).__name__)
