"""Intake rules (contract v1.5): what the ledger refuses to record because it could never do
what it says, checked when an event is submitted and not re-checked by the audit.

They refuse records that would be useless or wrong, not disclosures: a consent that cannot
count lets nothing be shared, referred or read whatever the log says (the gates, which the
audit does re-check, see to that), and a date still to come misleads only the figures built
on it. So a log written before these rules, which may hold such records, verifies as it
did. Each rule is decided from what the submission and the case's cleartext facts say, never
from a sealed value: a refusal that depended on the sealed age band would make the accepted
events in the log tell it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ledger.contract.gates import GUARDIANS, CaseState
from ledger.contract.vocabulary import parse_timestamp
from ledger.errors import Forbidden, Invalid

# A date up to this far ahead of UTC is today somewhere (UTC+14, the earliest time zone).
EARLIEST_ZONE = timedelta(hours=14)


def check_times(
    etype: str, facts: Mapping[str, Any], attrs: Mapping[str, Any], now: datetime
) -> None:
    """Step 12 (422): a case identified on a day that has not begun anywhere yet, or a
    consent that has expired before it is recorded. `facts` and `attrs` are valid for the
    type already."""
    if etype == "case.opened" and attrs["identified_at"] > (now + EARLIEST_ZONE).date().isoformat():
        raise Invalid(
            "attrs.identified_at is a day still to come: give the day the survivor was"
            " identified (today at the latest)"
        )
    expires = facts.get("expires_at") if etype == "consent.granted" else None
    if expires is not None and parse_timestamp(expires) <= now:
        raise Invalid("facts.expires_at has passed: a consent must expire after it is recorded")


def check_consent_can_count(state: CaseState | None, etype: str, facts: Mapping[str, Any]) -> None:
    """Step 13 (403, a consent gate): in a case of a child or of unknown age (`minor`,
    the presumption of minority) a consent counts only if a guardian or guardian ad litem
    gives it with the child's assent or the assent exemption, so one given by the survivor,
    or by a guardian without either, would never let anything be shared, referred or read.

    An exemption claimed is accepted: whether it holds (a child under 6) depends on the
    sealed age band, and the consent register shows whether the consent counts."""
    if etype != "consent.granted" or state is None or not state.minor:
        return
    if facts["given_by"] not in GUARDIANS:
        raise Forbidden(
            "this is a case of a child or of unknown age (presumed a child): a consent given"
            " by the survivor would never count. A guardian or guardian ad litem gives it,"
            " with the child's assent (facts.child_assent: true); if the survivor is an"
            " adult, record age.assessed with the adult age band first"
        )
    if facts["child_assent"] is not True and not facts["assent_exempt"]:
        raise Forbidden(
            "in a case of a child or of unknown age a guardian's consent counts only with the"
            " child's assent (facts.child_assent: true) or the exemption under 6"
            " (facts.assent_exempt: true): without either it would never count"
        )
