"""Who must be told of an accepted event, and what they are asked to do (docs/notices.md).

A notice names an agency, a kind, the case and the log position of the event it is about,
and (for referrals, consents and shares) the id it concerns: never anything personal. The
ledger records an event's notices in the event's own transaction, so a notice never exists
for an event that rolled back and is never lost for one that committed. Notices are not
projections: `ledger projections rebuild` neither makes nor sends them again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.contract.gates import CaseState
from ledger.contract.vocabulary import parse_timestamp
from ledger.errors import Conflict, Forbidden

# What the recipient of each kind of notice is asked to do.
ASKS = {
    "referral.made": "answer the referral: accept or decline it",
    "referral.accepted": "none: the agency you referred to accepted",
    "referral.declined": "refer elsewhere if the survivor still needs the service",
    "referral.completed": "none: the service was provided",
    "data.shared": "read what was shared with you, under the consent it names",
    "consent.withdrawn": "stop using what you received under this consent, and acknowledge",
    "case.erased": "delete what you hold of this case, and acknowledge",
    # time-based, made by the ledger's background loop when the time comes:
    "consent.expired": "stop using what you received under this consent",
    "referral.overdue": "the referral passed its due time unanswered: answer it, or follow up",
}
KINDS: tuple[str, ...] = tuple(ASKS)
ACKNOWLEDGED = frozenset({"consent.withdrawn", "case.erased"})  # a recipient confirms these
OPEN_REFERRAL = ("pending", "accepted")  # a referral not answered with an outcome yet
HEALTH_COMPONENT = "health_psychosocial"


def health_deadline(identified_at: str) -> datetime:
    """Principle XI: health referrals are due within 24 h of identification. Identification
    is recorded as a date, so the deadline is 24 h after the end of that day."""
    day = datetime.strptime(identified_at, "%Y-%m-%d").replace(tzinfo=UTC)
    return day + timedelta(days=2)


# The due time of a referral made with `due_by: null`, counted from its `signed_at`: health
# and psychosocial care within 24 hours (principle XI), otherwise an urgent referral within
# two days and a routine one within a week.
DUE_HOURS = {HEALTH_COMPONENT: 24, "urgent": 48, "routine": 7 * 24}


def default_due(component: str, urgency: str, signed_at: datetime) -> datetime:
    """What a referral's `due_by: null` stands for (`DUE_HOURS` after it was signed)."""
    hours = DUE_HOURS[HEALTH_COMPONENT] if component == HEALTH_COMPONENT else DUE_HOURS[urgency]
    return signed_at + timedelta(hours=hours)


def referral_due(
    attrs: Mapping[str, Any],
    signed_at: str,
    identified_at: str | None,
    deadline_of: Callable[[str], datetime] = health_deadline,
) -> datetime:
    """When a referral is due: its `due_by`, or the default for a null one (from the
    envelope's `signed_at`); a health referral at the latest by the health deadline of the
    case's identification day (`identified_at`; None when it cannot be read: no cap).

    Every reader of a due time (the referral board, the overdue timers, the indicators)
    computes it here, from the signed event, so a default is decided once and the sealed
    attrs stay what the agency signed."""
    component = attrs["component"]
    given = attrs["due_by"]
    if given is None:
        due = default_due(component, attrs["urgency"], parse_timestamp(signed_at))
    else:
        due = parse_timestamp(given)
    if component == HEALTH_COMPONENT and identified_at is not None:
        due = min(due, deadline_of(identified_at))
    return due


@dataclass(frozen=True)
class Notice:
    agency: str  # who is told
    kind: str
    subject: str | None  # the referral, consent or share it concerns


def received_under(state: CaseState, consent_id: str) -> set[str]:
    """Every agency that received data (a share, an accepted referral) or a referral under
    a consent: those told when it is withdrawn."""
    sent = {agency for agency, by_consent in state.disclosed.items() if consent_id in by_consent}
    return sent | {r.to for r in state.referrals.values() if r.consent_id == consent_id}


def notices_of(
    state: CaseState,
    etype: str,
    facts: Mapping[str, Any],
    agency: str,
    notify: Sequence[str] = (),
) -> list[Notice]:
    """The notices of an accepted event, from the case's state with the event applied;
    `notify`: the agencies an erasure tells (the ledger's `notify` list). The agency that
    appended the event is never told of its own act."""
    found: list[Notice] = []
    if etype == "referral.made":
        found.append(Notice(facts["to"], etype, facts["referral_id"]))
    elif etype in ("referral.accepted", "referral.declined", "referral.completed"):
        referral = state.referrals[facts["referral_id"]]
        found.append(Notice(referral.by or state.holder or agency, etype, referral.referral_id))
    elif etype == "data.shared":
        found.append(Notice(facts["recipient"], etype, facts["share_id"]))
    elif etype == "consent.withdrawn":
        consent_id = facts["consent_id"]
        found += [Notice(a, etype, consent_id) for a in sorted(received_under(state, consent_id))]
    elif etype == "case.erased":
        found += [Notice(a, etype, None) for a in sorted(notify)]
    return [n for n in found if n.agency != agency]


def told_when_due(state: CaseState, kind: str, subject: str) -> list[Notice]:
    """The notices a timer makes when its time comes, from the case's state then: a consent
    expired while still in force (a withdrawal told its recipients already), a referral
    still open at its due time (both agencies)."""
    if state.erased:
        return []
    if kind == "consent.expired":
        consent = state.consents.get(subject)
        if consent is None or consent.withdrawn:
            return []
        return [Notice(a, kind, subject) for a in sorted(received_under(state, subject))]
    referral = state.referrals.get(subject)
    if referral is None or referral.status not in OPEN_REFERRAL:
        return []
    parties = {referral.to, referral.by or state.holder}
    return [Notice(a, kind, subject) for a in sorted(p for p in parties if p)]


def told_of(
    state: CaseState, etype: str, facts: Mapping[str, Any], agency: str, readers: set[str]
) -> set[str]:
    """Who a withdrawal or an erasure tells, asked to acknowledge (the auditor's view, from
    the log alone: `readers` are the agencies with unsealed reads of the case)."""
    if etype == "consent.withdrawn":
        return received_under(state, facts["consent_id"]) - {agency}
    if etype == "case.erased":
        return (state.named | readers) - {agency}
    return set()


def check_acknowledgement(
    state: CaseState, facts: Mapping[str, Any], agency: str, was_told: bool
) -> None:
    """A `notice.acknowledged` comes from an agency the notice told, once."""
    if not was_told:
        raise Forbidden(
            f"your agency was not told of a {facts['kind']} at position {facts['position']} of"
            " this case: only the agencies a notice told acknowledge it"
        )
    if (facts["position"], agency) in state.acknowledged:
        raise Conflict("your agency already acknowledged that notice")
