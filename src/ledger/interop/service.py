"""Access rules, unsealing and access logging around the interoperability formats.

Receipts and FHIR resources follow the rules of the consent register
(`GET /v1/cases/{id}/consents`): the holder sees every consent of the case, other related
agencies the consents that name them while they may read some category (403 otherwise), unrelated
agencies get 404, an erased case 410. Each answer unseals the consent's attrs (language,
interpreter, notice version, withdrawal reason), so each is logged as an access entry,
as `read_case` does. The HTCDS export unseals attrs of every case of a year on the
deployment itself (it needs the key-encryption key) and, like statistics releases, writes
anonymised output only: it adds no access entries (see docs/interop/htcds.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from ledger.contract import crypto
from ledger.contract.case import Case
from ledger.contract.gates import Consent, readable_categories
from ledger.contract.sealing import unseal_item
from ledger.contract.vocabulary import CATEGORIES, PURPOSES, format_timestamp
from ledger.errors import Conflict, Forbidden, Invalid, NotFound
from ledger.interop import consent_receipt, fhir, htcds, printout
from ledger.interop.htcds import CaseProfile
from ledger.interop.record import (
    ConsentEvent,
    ConsentRecord,
    normalise_code,
    ordered,
    receipt_code,
    subject_id,
)
from ledger.ledger import Ledger
from ledger.services.access import Unsealed, staff_agency
from ledger.services.readmodels import ReadModels
from ledger.services.tokens import Principal
from ledger.storage.base import ReceiptCode

log = logging.getLogger("ledger.interop")

RECEIPT_FORMATS = {
    "note": "text/plain; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}


class InteropService:
    """Consent receipts, FHIR Consent resources, receipt-code look-ups and HTCDS profiles."""

    def __init__(self, ledger: Ledger, models: ReadModels) -> None:
        self.ledger, self.models = ledger, models

    # -- one consent, as the caller may see it -----------------------------------------------

    def _visible_consent(
        self, principal: Principal, case: Case, consent_id: str, now: datetime
    ) -> Consent:
        """The register's rule: 403 for a related agency without a counting consent, 404 for
        a consent that does not exist or (for a non-holder) does not name the caller."""
        agency = staff_agency(principal)
        state = case.state
        readable_categories(state, agency, now, partial(self.ledger.access.age_band, case))
        consent = state.consents.get(consent_id)
        if consent is None or (agency != state.holder and agency not in consent.recipients):
            raise NotFound("no such consent in this case for your agency")
        return consent

    def _record(self, case: Case, consent: Consent, key: bytes) -> ConsentRecord:
        case_id = case.state.case_id
        records = self.ledger.cases.records(case)
        granted = records[consent.version - 1]
        facts = granted["envelope"]["facts"]
        attrs = unseal_item(key, case_id, granted, "attrs")
        minor = True
        for record in records[: consent.version]:
            if record["envelope"]["type"] in ("case.opened", "age.assessed"):
                minor = bool(record["envelope"]["facts"]["minor"])
        withdrawn, reason = None, None
        for record in records[consent.version :]:
            env = record["envelope"]
            if (
                env["type"] == "consent.withdrawn"
                and env["facts"]["consent_id"] == consent.consent_id
            ):
                withdrawn = self._event("withdrawn", record, key)
                reason = unseal_item(key, case_id, record, "attrs")["reason"]
        agencies = {granted["envelope"]["agency"], *consent.recipients}
        names = {}
        for agency in agencies:
            row = self.ledger.store.agency(agency)
            names[agency] = row.name if row is not None else agency
        return ConsentRecord(
            origin=self.ledger.origin,
            case_id=case_id,
            consent_id=consent.consent_id,
            purposes=ordered(facts["purposes"], PURPOSES),
            recipients=tuple(sorted(facts["recipients"])),
            categories=ordered(facts["categories"], CATEGORIES),
            expires_at=facts["expires_at"],
            given_by=facts["given_by"],
            child_assent=facts["child_assent"],
            assent_exempt=facts["assent_exempt"],
            minor=minor,
            language=attrs["language"],
            interpreter=attrs["interpreter"],
            notice_version=attrs["notice_version"],
            granted=self._event("granted", granted, key),
            withdrawn=withdrawn,
            withdrawal_reason=reason,
            agency_names=names,
            subject=subject_id(key),
        )

    def _event(self, kind: str, record: dict[str, Any], key: bytes) -> ConsentEvent:
        env = record["envelope"]
        found = self.ledger.store.find_event(env["event_id"])
        assert found is not None
        return ConsentEvent(
            kind=kind,
            event_id=env["event_id"],
            index=found.position,
            recorded_at=record["recorded_at"],
            agency=env["agency"],
            code=receipt_code(key, env["event_id"]),
        )

    def consent_record(
        self, principal: Principal, case_id: str, consent_id: str
    ) -> tuple[ConsentRecord, datetime]:
        """The consent as the caller may see it, its attrs unsealed and the read logged."""
        staff_agency(principal)

        def build(case: Case, now: datetime) -> Unsealed[tuple[ConsentRecord, datetime]]:
            consent = self._visible_consent(principal, case, consent_id, now)
            record = self._record(case, consent, self.ledger.access.key(case_id))
            return Unsealed((record, now), [])  # the consent's attrs, no category

        return self.ledger.access.read(principal, case_id, build)

    # -- the formats ---------------------------------------------------------------------------

    def receipt(
        self,
        principal: Principal,
        case_id: str,
        consent_id: str,
        event: str | None = None,
        fmt: str = "note",
    ) -> tuple[bytes, str]:
        """One consent event's receipt as a signed note, HTML or PDF, and its media type."""
        if fmt == "note" and self.ledger.receipt_key is None:
            staff_agency(principal)
            self.ledger.access.visible(principal, case_id)  # 404 / 410 come first
            raise Conflict("this deployment has no receipt key; run `ledger init`")
        record, _now = self.consent_record(principal, case_id, consent_id)
        self._index_codes(record)  # the codes it prints (the grant's, the withdrawal's)
        try:
            chosen = record.event(event)
        except LookupError:
            raise NotFound(
                "the consent was not withdrawn: there is no withdrawal receipt"
            ) from None
        if fmt == "html":
            body = printout.render_html(record, chosen).encode()
        elif fmt == "pdf":
            body = printout.render_pdf(record, chosen)
        else:
            assert self.ledger.receipt_key is not None  # checked above
            data = consent_receipt.receipt_record(record, chosen)
            body = consent_receipt.sign_receipt(data, self.ledger.receipt_key).encode()
        log.info("consent receipt case=%s event=%s format=%s", case_id, chosen.event_id, fmt)
        return body, RECEIPT_FORMATS[fmt]

    def fhir_consent(self, principal: Principal, case_id: str, consent_id: str) -> dict[str, Any]:
        """The consent as a FHIR R4 Consent resource."""
        record, now = self.consent_record(principal, case_id, consent_id)
        return fhir.consent_resource(record, now)

    def lookup(self, principal: Principal, code: str) -> dict[str, str]:
        """Staff look-up of a printed receipt code among the consents the caller may see.

        Codes are indexed as receipts are printed, by a MAC under a key derived from the log
        key (`code_mac`: a database dump alone does not map a code to its case); the look-up
        is one indexed read and one check of the register's rule, whatever the agency's
        number of cases. Erasure drops the case's codes (and its key, which made them)."""
        agency = staff_agency(principal)
        found = self.ledger.store.receipt_code(self.code_mac(normalise_code(code)))
        if found is None or not self._may_see(agency, found.case_id, found.consent_id):
            raise NotFound("no consent receipt with this code among your agency's cases")
        log.info("receipt code looked up case=%s agency=%s", found.case_id, agency)
        return {"case_id": found.case_id, "consent_id": found.consent_id, "event": found.kind}

    def code_mac(self, code: str) -> bytes:
        return crypto.derived_mac(self.ledger.log.key, "consent-receipt-code", code.encode())

    def _index_codes(self, record: ConsentRecord) -> None:
        events = [e for e in (record.granted, record.withdrawn) if e is not None]
        self.ledger.store.index_receipt_codes(
            [
                ReceiptCode(self.code_mac(e.code), record.case_id, record.consent_id, e.kind)
                for e in events
            ]
        )

    def _may_see(self, agency: str, case_id: str, consent_id: str) -> bool:
        """The register's rule for one consent of a case: its holder sees it; a recipient
        sees the consents naming it, while it may read some category. The relation is asked
        first: another agency's code costs what a code never issued costs."""
        if not self.ledger.store.related([(case_id, agency)]):
            return False
        case = self.ledger.cases.load(case_id)
        if case is None or case.state.erased:
            return False
        if agency == case.state.holder:
            return True
        try:
            readable_categories(
                case.state, agency, self.ledger.clock(), partial(self.ledger.access.age_band, case)
            )
        except Forbidden:
            return False
        return agency in case.state.consents[consent_id].recipients

    # -- HTCDS -------------------------------------------------------------------------------------

    def htcds_export(
        self, year: int, progress: Callable[[int, int], None] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The year's frozen HTCDS export (CSV text and report), made now if it is the first:
        the first export of a year is the only one (docs/interop/htcds.md). ExportError for
        a year that has not ended. `progress(done, total)`: cases read so far."""
        htcds.check_year(year, self.ledger.clock().year)
        exports = htcds.ExportStore(self.models.views)
        frozen = exports.get(year)
        if frozen is None:
            text, details = htcds.export(year, self.htcds_profiles(year, progress))
            exports.freeze(year, text, details, format_timestamp(self.ledger.clock()))
            frozen = exports.get(year)
            assert frozen is not None
        return frozen

    def htcds_for(self, principal: Principal, year: int) -> tuple[str, dict[str, Any]]:
        """`htcds_export` for a monitor token (the coordinating body), never for others."""
        if principal.role != "monitor":
            raise Forbidden("the HTCDS export is for monitor tokens")
        try:
            return self.htcds_export(year)
        except htcds.ExportError as exc:
            raise Invalid(str(exc)) from None

    def htcds_profiles(
        self, year: int, progress: Callable[[int, int], None] | None = None
    ) -> list[CaseProfile]:
        """Each non-erased case identified in `year`, as it stood at the end of that year."""
        self.models.runner.catch_up()
        views = self.models.views
        with views.read() as cur:
            cur.execute(views.sql("SELECT case_id FROM {s}view_cases ORDER BY case_id"))
            case_ids = [r["case_id"] for r in cur.fetchall()]
        profiles = []
        for done, case_id in enumerate(case_ids, 1):
            profile = self._profile(case_id, year)
            if profile is not None:
                profiles.append(profile)
            if progress is not None:
                progress(done, len(case_ids))
        log.info("htcds profiles year=%d cases=%d", year, len(profiles))
        return profiles

    def _profile(self, case_id: str, year: int) -> CaseProfile | None:
        found = self.ledger.live_case(case_id)
        if found is None:
            return None
        _case, key, records = found
        opened = unseal_item(key, case_id, records[0], "attrs")
        if not opened["identified_at"].startswith(f"{year}-"):
            return None
        cutoff = f"{year + 1}-01-01T00:00:00Z"
        age_band, closed = opened["age_band"], False
        components: dict[str, str] = {}
        outcomes: dict[str, str] = {}
        for record in records[1:]:
            if record["recorded_at"] >= cutoff:
                break
            env = record["envelope"]
            etype, facts = env["type"], env["facts"]
            if etype == "age.assessed":
                age_band = unseal_item(key, case_id, record, "attrs")["age_band"]
            elif etype == "case.closed":
                closed = True
            elif etype == "referral.made":
                attrs = unseal_item(key, case_id, record, "attrs")
                components[facts["referral_id"]] = attrs["component"]
                outcomes[facts["referral_id"]] = "pending"
            elif etype in ("referral.accepted", "referral.declined", "referral.completed"):
                outcomes[facts["referral_id"]] = etype.split(".")[1]
        return CaseProfile(
            age_band=age_band,
            gender=opened["gender"],
            exploitation=frozenset(opened["exploitation"]),
            closed=closed,
            referrals=tuple(sorted((components[r], outcomes[r]) for r in components)),
        )
