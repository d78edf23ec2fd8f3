"""The per-type schemas of `facts` and `attrs` (pydantic models), SCHEMAS and EVENT_TYPES."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from ledger.contract.vocabulary import (
    ACK_ACTIONS,
    ACK_KINDS,
    AGE_BANDS,
    AGENCY_RE,
    CATEGORIES,
    CLOSE_REASONS,
    COMPONENTS,
    DECLINE_REASONS,
    ERASURE_REASONS,
    EXPLOITATIONS,
    GENDERS,
    GIVEN_BY,
    GOAL_STATUSES,
    GUARDIAN_ROLES,
    METHODS,
    PURPOSES,
    RETENTION_BASES,
    URGENCIES,
    WITHDRAWAL_REASONS,
    is_uuid4,
    parse_timestamp,
)

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BCP47 = re.compile(r"^(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:-[A-Za-z0-9]{1,8})*$")


# --- scalar rules as pydantic types -------------------------------------------------------------


def _check_uuid4(value: str) -> str:
    if not is_uuid4(value):
        raise ValueError("must be a lowercase hyphenated version-4 UUID")
    return value


def _check_timestamp(value: str) -> str:
    parse_timestamp(value)
    return value


def _check_date(value: str) -> str:
    if not _DATE.fullmatch(value):
        raise ValueError("dates are exactly YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real date (YYYY-MM-DD)") from None
    return value


def _check_unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("list members must not repeat")
    return values


Uuid4 = Annotated[str, AfterValidator(_check_uuid4), Field(json_schema_extra={"format": "uuid"})]
AgencyId = Annotated[str, StringConstraints(pattern=AGENCY_RE)]
Timestamp = Annotated[
    str,
    AfterValidator(_check_timestamp),
    Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"),
]
Date = Annotated[str, AfterValidator(_check_date), Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
Language = Annotated[str, StringConstraints(pattern=_BCP47.pattern, max_length=35)]
AgeBand = Literal[AGE_BANDS]  # type: ignore[valid-type]
Gender = Literal[GENDERS]  # type: ignore[valid-type]
Exploitation = Literal[EXPLOITATIONS]  # type: ignore[valid-type]
Purpose = Literal[PURPOSES]  # type: ignore[valid-type]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Component = Literal[COMPONENTS]  # type: ignore[valid-type]


def _set_of(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1), AfterValidator(_check_unique)]


# --- per-type schemas -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Empty(_Strict):
    """No members."""


class MinorFacts(_Strict):
    minor: bool


class GuardianFacts(_Strict):
    role: Literal[GUARDIAN_ROLES]  # type: ignore[valid-type]


class ConsentGrantedFacts(_Strict):
    consent_id: Uuid4
    purposes: _set_of(Purpose)  # type: ignore[valid-type]
    recipients: _set_of(AgencyId)  # type: ignore[valid-type]
    categories: _set_of(Category)  # type: ignore[valid-type]
    expires_at: Timestamp | None
    given_by: Literal[GIVEN_BY]  # type: ignore[valid-type]
    child_assent: bool | None
    assent_exempt: bool


class ConsentRefFacts(_Strict):
    consent_id: Uuid4


class ReferralMadeFacts(_Strict):
    referral_id: Uuid4
    to: AgencyId
    consent_id: Uuid4
    categories: _set_of(Category)  # type: ignore[valid-type]


class ReferralRefFacts(_Strict):
    referral_id: Uuid4


class OptionalReferralFacts(_Strict):
    referral_id: Uuid4 | None


class DataSharedFacts(_Strict):
    share_id: Uuid4
    recipient: AgencyId
    consent_id: Uuid4
    purpose: Purpose  # type: ignore[valid-type]
    categories: _set_of(Category)  # type: ignore[valid-type]


class GoalFacts(_Strict):
    goal_id: Uuid4


class GoalSetFacts(_Strict):
    goal_id: Uuid4
    referral_id: Uuid4 | None  # the referral the goal is for, if any (its provider updates it)


class ErasedFacts(_Strict):
    request_event_id: Uuid4


class AcknowledgedFacts(_Strict):
    """A recipient's answer to a withdrawal or erasure notice: the notice's event by log
    position, and what the recipient did (`legal_basis` only when it keeps data)."""

    position: Annotated[int, Field(ge=0)]
    kind: Literal[ACK_KINDS]  # type: ignore[valid-type]
    action: Literal[ACK_ACTIONS]  # type: ignore[valid-type]
    legal_basis: Literal[RETENTION_BASES] | None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _basis_with_keeping(self) -> AcknowledgedFacts:
        if (self.action == "kept_legal_obligation") != (self.legal_basis is not None):
            raise ValueError("legal_basis is given exactly when action is kept_legal_obligation")
        return self


class CaseOpenedAttrs(_Strict):
    age_band: AgeBand  # type: ignore[valid-type]
    gender: Gender  # type: ignore[valid-type]
    exploitation: _set_of(Exploitation)  # type: ignore[valid-type]
    identified_at: Date


class AgeAssessedAttrs(_Strict):
    age_band: AgeBand  # type: ignore[valid-type]
    method: Literal[METHODS]  # type: ignore[valid-type]


class ConsentGrantedAttrs(_Strict):
    language: Language
    interpreter: bool
    notice_version: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class WithdrawnAttrs(_Strict):
    reason: Literal[WITHDRAWAL_REASONS]  # type: ignore[valid-type]


class ReferralMadeAttrs(_Strict):
    component: Component  # type: ignore[valid-type]
    due_by: Timestamp | None  # null: the default of `notices.default_due` (v1.5)
    urgency: Literal[URGENCIES]  # type: ignore[valid-type]


class NullReasonAttrs(_Strict):
    reason: None


class DeclinedAttrs(_Strict):
    reason: Literal[DECLINE_REASONS]  # type: ignore[valid-type]


class ComponentAttrs(_Strict):
    component: Component  # type: ignore[valid-type]


class GoalAttrs(_Strict):
    component: Component  # type: ignore[valid-type]
    status: Literal[GOAL_STATUSES]  # type: ignore[valid-type]


class FeedbackAttrs(_Strict):
    rating: Annotated[int, Field(ge=1, le=5)]


class ClosedAttrs(_Strict):
    reason: Literal[CLOSE_REASONS]  # type: ignore[valid-type]


class ErasureRequestedAttrs(_Strict):
    reason: Literal[ERASURE_REASONS]  # type: ignore[valid-type]


@dataclass(frozen=True)
class EventSchema:
    facts: type[_Strict]
    attrs: type[_Strict]


SCHEMAS: dict[str, EventSchema] = {
    "case.opened": EventSchema(MinorFacts, CaseOpenedAttrs),
    "age.assessed": EventSchema(MinorFacts, AgeAssessedAttrs),
    "guardian.appointed": EventSchema(GuardianFacts, Empty),
    "consent.granted": EventSchema(ConsentGrantedFacts, ConsentGrantedAttrs),
    "consent.withdrawn": EventSchema(ConsentRefFacts, WithdrawnAttrs),
    "referral.made": EventSchema(ReferralMadeFacts, ReferralMadeAttrs),
    "referral.accepted": EventSchema(ReferralRefFacts, NullReasonAttrs),
    "referral.declined": EventSchema(ReferralRefFacts, DeclinedAttrs),
    "referral.completed": EventSchema(ReferralRefFacts, NullReasonAttrs),
    "data.shared": EventSchema(DataSharedFacts, Empty),
    "service.delivered": EventSchema(OptionalReferralFacts, ComponentAttrs),
    "plan.goal_set": EventSchema(GoalSetFacts, GoalAttrs),
    "plan.goal_updated": EventSchema(GoalFacts, GoalAttrs),
    "feedback.recorded": EventSchema(OptionalReferralFacts, FeedbackAttrs),
    "case.closed": EventSchema(Empty, ClosedAttrs),
    "erasure.requested": EventSchema(Empty, ErasureRequestedAttrs),
    "case.erased": EventSchema(ErasedFacts, Empty),
    "notice.acknowledged": EventSchema(AcknowledgedFacts, Empty),
}
EVENT_TYPES = tuple(SCHEMAS)
