"""Consent and permission rules as pure functions over a case's cleartext state.

`CaseState` is built from envelopes alone (cleartext facts), in log order, so the ledger
(before it stores anything) and the auditor (re-checking the whole history without any key)
apply the same rules. The one sealed input, the latest assessed age band for the assent
exemption, is passed in as a function; the auditor passes None and can check only that the
exemption was claimed in a minor case.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.contract.vocabulary import format_timestamp, parse_timestamp
from ledger.errors import Forbidden, Gone, Invalid, NotFound

GUARDIANS = frozenset({"guardian", "guardian_ad_litem"})

# Purposes under which a consent discloses data to its recipients; a consent for `statistics`
# or `prosecution` alone lets its recipients read nothing.
DISCLOSING_PURPOSES = frozenset({"assistance", "referral", "data_sharing"})

# Who may append each type (docs/authorization.md). The holder is the agency that opened the
# case; a provider is the `to` of an accepted referral, which appends for that referral only.
ANYONE, HOLDER, REFERRAL_TO, HOLDER_OR_PROVIDER, SUPERVISOR, SECOND_SUPERVISOR, TOLD = (
    "any agency",
    "the case's holder",
    "the referral's recipient",
    "the case's holder, or the provider of the accepted referral it names",
    "a supervisor of the case's holder",
    "another supervisor of the case's holder",
    "an agency the notice told (checked against the notices: `contract/notices.py`)",
)
APPEND_RULES: Mapping[str, str] = {
    "case.opened": ANYONE,
    "age.assessed": HOLDER,
    "guardian.appointed": HOLDER,
    "consent.granted": HOLDER,
    "consent.withdrawn": HOLDER,
    "referral.made": HOLDER,
    "referral.accepted": REFERRAL_TO,
    "referral.declined": REFERRAL_TO,
    "referral.completed": REFERRAL_TO,
    "data.shared": HOLDER,
    "service.delivered": HOLDER_OR_PROVIDER,
    "plan.goal_set": HOLDER_OR_PROVIDER,
    "plan.goal_updated": HOLDER_OR_PROVIDER,
    "feedback.recorded": HOLDER_OR_PROVIDER,
    "case.closed": HOLDER,
    "erasure.requested": SUPERVISOR,
    "case.erased": SECOND_SUPERVISOR,
    "notice.acknowledged": TOLD,
}
# Facts naming agencies that the event sends data to or names as recipients: each must be a
# registered agency with a live key (step 8).
NAMED_AGENCY_FACTS: Mapping[str, tuple[str, ...]] = {
    "consent.granted": ("recipients",),
    "referral.made": ("to",),
    "data.shared": ("recipient",),
}

AgeBandOf = Callable[[], str | None] | None


@dataclass
class Consent:
    consent_id: str
    version: int
    purposes: frozenset[str]
    recipients: frozenset[str]
    categories: frozenset[str]
    expires_at: datetime | None
    given_by: str
    child_assent: bool | None
    assent_exempt: bool
    withdrawn: bool = False

    def active(self, now: datetime) -> bool:
        return not self.withdrawn and (self.expires_at is None or self.expires_at > now)

    def to_json(self) -> dict[str, Any]:
        return {
            "consent_id": self.consent_id,
            "version": self.version,
            "purposes": sorted(self.purposes),
            "recipients": sorted(self.recipients),
            "categories": sorted(self.categories),
            "expires_at": None if self.expires_at is None else format_timestamp(self.expires_at),
            "given_by": self.given_by,
            "child_assent": self.child_assent,
            "assent_exempt": self.assent_exempt,
            "withdrawn": self.withdrawn,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Consent:
        expires = data["expires_at"]
        return cls(
            **{
                **data,
                "purposes": frozenset(data["purposes"]),
                "recipients": frozenset(data["recipients"]),
                "categories": frozenset(data["categories"]),
                "expires_at": None if expires is None else parse_timestamp(expires),
            }
        )


@dataclass
class Referral:
    referral_id: str
    to: str
    consent_id: str
    categories: frozenset[str]
    status: str = "pending"  # pending | accepted | declined | completed
    by: str | None = None  # the referring agency (None in snapshots older than it)

    def to_json(self) -> dict[str, Any]:
        return {
            "referral_id": self.referral_id,
            "to": self.to,
            "consent_id": self.consent_id,
            "categories": sorted(self.categories),
            "status": self.status,
            "by": self.by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Referral:
        return cls(**{**data, "categories": frozenset(data["categories"])})


@dataclass
class CaseState:
    """What the gates need, derived from a case's envelopes in log order."""

    case_id: str
    version: int = 0
    minor: bool = True  # presumption of minority until the case says otherwise
    age_version: int = 0  # case version whose sealed attrs hold the latest age band
    holder: str | None = None  # the agency that opened the case
    related: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)  # ever a recipient, recipient or `to`
    consents: dict[str, Consent] = field(default_factory=dict)
    referrals: dict[str, Referral] = field(default_factory=dict)
    # What each agency was sent: agency -> consent id -> categories, from its shares and the
    # referrals it accepted. Reads follow it (`readable_categories`).
    disclosed: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    goals: dict[str, str | None] = field(default_factory=dict)  # goal id -> its referral
    erasure_requests: dict[str, str] = field(default_factory=dict)  # event id -> actor
    closed: bool = False
    erased: bool = False
    erased_at: str | None = None
    erased_version: int | None = None
    # (notice's event position, agency) -> [action, recorded_at] of its acknowledgement
    acknowledged: dict[tuple[int, str], list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (sets as sorted lists, maps in insertion order): a snapshot's content."""
        return {
            "case_id": self.case_id,
            "version": self.version,
            "minor": self.minor,
            "age_version": self.age_version,
            "holder": self.holder,
            "related": sorted(self.related),
            "named": sorted(self.named),
            "consents": [c.to_json() for c in self.consents.values()],
            "referrals": [r.to_json() for r in self.referrals.values()],
            "disclosed": {
                agency: {consent: sorted(cats) for consent, cats in sent.items()}
                for agency, sent in sorted(self.disclosed.items())
            },
            "goals": [[goal, referral] for goal, referral in self.goals.items()],
            "erasure_requests": [[k, v] for k, v in self.erasure_requests.items()],
            "closed": self.closed,
            "erased": self.erased,
            "erased_at": self.erased_at,
            "erased_version": self.erased_version,
            "acknowledged": [[p, a, *done] for (p, a), done in self.acknowledged.items()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseState:
        consents = (Consent.from_json(c) for c in data["consents"])
        referrals = (Referral.from_json(r) for r in data["referrals"])
        return cls(
            **{
                **data,
                "related": set(data["related"]),
                "named": set(data["named"]),
                "consents": {c.consent_id: c for c in consents},
                "referrals": {r.referral_id: r for r in referrals},
                "disclosed": {
                    agency: {consent: set(cats) for consent, cats in sent.items()}
                    for agency, sent in data["disclosed"].items()
                },
                "goals": {goal: referral for goal, referral in data["goals"]},
                "erasure_requests": {k: v for k, v in data["erasure_requests"]},
                "acknowledged": {(a[0], a[1]): a[2:] for a in data.get("acknowledged", ())},
            }
        )

    def apply(self, envelope: Mapping[str, Any], actor: str, recorded_at: str) -> None:
        """Fold one accepted event into the state."""
        self.version += 1
        etype, agency, facts = envelope["type"], envelope["agency"], envelope["facts"]
        self.related.add(agency)
        named = set(facts.get("recipients") or ())
        named.update(facts[name] for name in ("recipient", "to") if facts.get(name))
        self.named |= named
        self.related |= named
        if etype == "case.opened":
            self.holder = agency
        if etype in ("case.opened", "age.assessed"):
            self.minor = bool(facts["minor"])
            self.age_version = self.version
        elif etype == "consent.granted":
            expires = facts["expires_at"]
            self.consents[facts["consent_id"]] = Consent(
                consent_id=facts["consent_id"],
                version=self.version,
                purposes=frozenset(facts["purposes"]),
                recipients=frozenset(facts["recipients"]),
                categories=frozenset(facts["categories"]),
                expires_at=None if expires is None else parse_timestamp(expires),
                given_by=facts["given_by"],
                child_assent=facts["child_assent"],
                assent_exempt=facts["assent_exempt"],
            )
        elif etype == "consent.withdrawn":
            self.consents[facts["consent_id"]].withdrawn = True
        elif etype == "referral.made":
            self.referrals[facts["referral_id"]] = Referral(
                facts["referral_id"],
                facts["to"],
                facts["consent_id"],
                frozenset(facts["categories"]),
                by=agency,
            )
        elif etype in ("referral.accepted", "referral.declined", "referral.completed"):
            referral = self.referrals[facts["referral_id"]]
            referral.status = etype.split(".")[1]
            if etype == "referral.accepted":  # the referral's categories are sent now
                self._disclose(referral.to, referral.consent_id, referral.categories)
        elif etype == "data.shared":
            self._disclose(facts["recipient"], facts["consent_id"], facts["categories"])
        elif etype == "plan.goal_set":
            self.goals[facts["goal_id"]] = facts["referral_id"]
        elif etype == "case.closed":
            self.closed = True
        elif etype == "erasure.requested":
            self.erasure_requests[envelope["event_id"]] = actor
        elif etype == "notice.acknowledged":
            self.acknowledged[facts["position"], agency] = [facts["action"], recorded_at]
        elif etype == "case.erased":
            self.erased = True
            self.erased_at = recorded_at
            self.erased_version = self.version

    def _disclose(self, agency: str, consent_id: str, categories: Iterable[str]) -> None:
        self.disclosed.setdefault(agency, {}).setdefault(consent_id, set()).update(categories)

    def provided_referral(self, etype: str, facts: Mapping[str, Any]) -> Referral | None:
        """The referral a provider's append is for (`service.delivered`, `feedback.recorded`
        and `plan.goal_set` name it; `plan.goal_updated` through its goal), if any."""
        if etype == "plan.goal_updated":
            referral_id = self.goals.get(facts["goal_id"])
        else:
            referral_id = facts.get("referral_id")
        return None if referral_id is None else self.referrals.get(referral_id)


# --- step 3 and 4: relation and erasure -------------------------------------------------------


def check_visible(state: CaseState | None, agency: str | None) -> CaseState:
    """404 unless the agency is related to the case; 410 once the case is erased."""
    if state is None or agency is None or agency not in state.related:
        raise NotFound("no such case for your agency")
    if state.erased:
        raise Gone(
            "the case was erased", erased_at=state.erased_at, case_version=state.erased_version
        )
    return state


# --- step 8: references -------------------------------------------------------------------------


_REFERRAL_FROM = {
    "referral.accepted": ("pending",),
    "referral.declined": ("pending",),
    "referral.completed": ("accepted",),
}


def check_references(state: CaseState | None, etype: str, facts: Mapping[str, Any]) -> None:
    """Ids named by the facts must exist in the case (and new ids must be new): Invalid."""
    if state is None:
        return  # only case.opened reaches here without a case
    if etype == "consent.granted" and facts["consent_id"] in state.consents:
        raise Invalid("facts.consent_id is already used in this case; use a new id")
    if etype in ("consent.withdrawn", "referral.made", "data.shared"):
        consent = state.consents.get(facts["consent_id"])
        if consent is None:
            raise Invalid("facts.consent_id does not name a consent of this case")
        if etype == "consent.withdrawn" and consent.withdrawn:
            raise Invalid("that consent is already withdrawn")
    if etype == "referral.made" and facts["referral_id"] in state.referrals:
        raise Invalid("facts.referral_id is already used in this case; use a new id")
    referral_id = facts.get("referral_id")
    if etype in _REFERRAL_FROM or (
        etype in ("service.delivered", "feedback.recorded", "plan.goal_set")
        and referral_id is not None
    ):
        referral = state.referrals.get(referral_id or "")
        if referral is None:
            raise Invalid("facts.referral_id does not name a referral of this case")
        allowed = _REFERRAL_FROM.get(etype)
        if allowed and referral.status not in allowed:
            raise Invalid(f"the referral is {referral.status}; {etype} needs it {allowed[0]}")
    if etype == "plan.goal_set" and facts["goal_id"] in state.goals:
        raise Invalid("facts.goal_id is already used in this case; use plan.goal_updated")
    if etype == "plan.goal_updated" and facts["goal_id"] not in state.goals:
        raise Invalid("facts.goal_id does not name a goal of this case")
    if etype == "case.erased" and facts["request_event_id"] not in state.erasure_requests:
        raise Invalid("facts.request_event_id does not name an erasure.requested of this case")


def named_agencies(etype: str, facts: Mapping[str, Any]) -> list[str]:
    """The agencies an event names as recipients: a consent's, a referral's `to`, a share's."""
    names: list[str] = []
    for member in NAMED_AGENCY_FACTS.get(etype, ()):
        value = facts[member]
        names.extend(value if isinstance(value, list) else [value])
    return names


def check_named_agencies(etype: str, facts: Mapping[str, Any], live: Collection[str]) -> None:
    """Every agency the event names must be registered, not removed and hold a live key
    (Invalid): a share to a typo would otherwise wait for whoever registers that id."""
    for member in NAMED_AGENCY_FACTS.get(etype, ()):
        value = facts[member]
        if any(name not in live for name in (value if isinstance(value, list) else [value])):
            raise Invalid(
                f"facts.{member} names an agency that is not registered (or was removed); "
                "check the agency id"
            )


# --- step 9: permissions and consent gates ------------------------------------------------------


def check_permission(
    state: CaseState | None,
    etype: str,
    facts: Mapping[str, Any],
    *,
    agency: str,
    role: str,
    actor: str,
) -> None:
    """Who may append this type to this case: Forbidden otherwise."""
    rule = APPEND_RULES[etype]
    if rule in (ANYONE, TOLD):
        return
    assert state is not None
    if rule == REFERRAL_TO:
        if state.referrals[facts["referral_id"]].to != agency:
            raise Forbidden(f"{etype} may be appended only by {rule}")
        return
    if rule == HOLDER_OR_PROVIDER and agency != state.holder:
        referral = state.provided_referral(etype, facts)
        if referral is None or referral.to != agency or referral.status != "accepted":
            raise Forbidden(
                f"{etype} may be appended only by {rule} (a provider appends for its own "
                "accepted referral: name it in facts.referral_id)"
            )
        return
    if agency != state.holder:
        raise Forbidden(f"{etype} may be appended only by {rule}")
    if rule in (SUPERVISOR, SECOND_SUPERVISOR) and role != "supervisor":
        raise Forbidden(f"{etype} needs a supervisor token")
    if rule == SECOND_SUPERVISOR and state.erasure_requests[facts["request_event_id"]] == actor:
        raise Forbidden("case.erased needs a different supervisor from the one who requested it")


def consent_counts(
    state: CaseState, consent: Consent, now: datetime, age_band_of: AgeBandOf
) -> bool:
    """Active, and in a minor case given by a guardian with assent or a valid exemption."""
    if not consent.active(now):
        return False
    if not state.minor:
        return True
    if consent.given_by not in GUARDIANS:
        return False
    if consent.child_assent is True:
        return True
    if consent.assent_exempt:
        # The exemption holds only for the 0-5 band; the auditor, without keys, cannot see it.
        return age_band_of is None or age_band_of() == "0-5"
    return False


def check_consent_gate(
    state: CaseState,
    etype: str,
    facts: Mapping[str, Any],
    now: datetime,
    age_band_of: AgeBandOf,
    agency: str | None = None,
) -> None:
    """No share, referral or acceptance without a counting consent that covers it, and no
    provider's append for a referral whose consent no longer counts: Forbidden.

    Accepting a referral sends its categories to the recipient, so its consent must still
    count then; a provider works under the referral's consent, so a withdrawal stops it.
    """
    categories = facts.get("categories")
    if etype == "data.shared":
        consent_id, recipient = facts["consent_id"], facts["recipient"]
        needed = {"data_sharing", facts["purpose"]}
    elif etype == "referral.made":
        consent_id, recipient, needed = facts["consent_id"], facts["to"], {"referral"}
    elif etype == "referral.accepted":
        referral = state.referrals[facts["referral_id"]]
        consent_id, recipient, needed = referral.consent_id, referral.to, {"referral"}
        categories = sorted(referral.categories)
    elif APPEND_RULES[etype] == HOLDER_OR_PROVIDER and agency != state.holder:
        provided = state.provided_referral(etype, facts)
        assert provided is not None  # check_permission let only its provider through
        consent_id, recipient, needed = provided.consent_id, provided.to, {"referral"}
        categories = sorted(provided.categories)
    else:
        return
    consent = state.consents[consent_id]
    if consent.withdrawn:
        raise Forbidden("the consent was withdrawn")
    if consent.expires_at is not None and consent.expires_at <= now:
        raise Forbidden("the consent has expired")
    if recipient not in consent.recipients:
        raise Forbidden("the consent does not name this recipient")
    if not needed <= consent.purposes:
        raise Forbidden(f"the consent does not cover the purpose(s): {', '.join(sorted(needed))}")
    if not set(categories or ()) <= consent.categories:
        raise Forbidden("the consent does not cover every category sent")
    if not consent_counts(state, consent, now, age_band_of):
        raise Forbidden(
            "in a case of a child or of unknown age a consent counts only if given by a "
            "guardian or guardian ad litem with the child's assent (or exempt under 6)"
        )


def disclosed_categories(
    state: CaseState, agency: str, now: datetime, age_band_of: AgeBandOf
) -> frozenset[str]:
    """The categories an agency other than the holder may read now: those a share or an
    accepted referral sent it, under a consent that names it, has a disclosing purpose and
    counts now (not withdrawn, not expired, the minors rule)."""
    readable: set[str] = set()
    for consent_id, sent in state.disclosed.get(agency, {}).items():
        consent = state.consents[consent_id]
        if (
            agency in consent.recipients
            and consent.purposes & DISCLOSING_PURPOSES
            and consent_counts(state, consent, now, age_band_of)
        ):
            readable |= sent & consent.categories
    return frozenset(readable)


def readable_categories(
    state: CaseState, agency: str, now: datetime, age_band_of: AgeBandOf
) -> frozenset[str] | None:
    """Categories an agency may unseal; None means all (the holder). Forbidden if none."""
    if agency == state.holder:
        return None
    granted = disclosed_categories(state, agency, now, age_band_of)
    if not granted:
        raise Forbidden(
            "nothing of this case was sent to your agency under a consent that counts now"
        )
    return granted


def referral_counts(
    state: CaseState, referral: Referral, now: datetime, age_band_of: AgeBandOf
) -> bool:
    """A referral's own attrs (component, urgency, due time) are its recipient's to see while
    the consent it was made under counts, accepted or not: it needs them to answer."""
    return consent_counts(state, state.consents[referral.consent_id], now, age_band_of)


def may_unseal_attrs(state: CaseState, agency: str, now: datetime, age_band_of: AgeBandOf) -> bool:
    """Whether an unsealed read of a case's attrs alone (an access entry without categories)
    is allowed: the holder, an agency that may read a category, or the recipient of a
    referral whose consent counts (its referral's attrs)."""
    if agency == state.holder or disclosed_categories(state, agency, now, age_band_of):
        return True
    return any(
        referral.to == agency and referral_counts(state, referral, now, age_band_of)
        for referral in state.referrals.values()
    )
