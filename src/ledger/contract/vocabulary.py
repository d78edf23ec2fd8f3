"""The contract's vocabularies (categories, purposes, ...) and scalar rules (ids, timestamps)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

CATEGORIES = (
    "identity",
    "contact",
    "health",
    "legal",
    "immigration",
    "location",
    "employment",
    "education",
    "family",
    "notes",
)
AGE_BANDS = ("0-5", "6-11", "12-14", "15-17", "adult", "unknown")
GENDERS = ("female", "male", "non_binary", "other", "undisclosed")
EXPLOITATIONS = (
    "sexual",
    "labour",
    "forced_criminality",
    "domestic_servitude",
    "forced_marriage",
    "organ_removal",
    "begging",
    "other",
)
PURPOSES = ("assistance", "referral", "data_sharing", "statistics", "prosecution")
GIVEN_BY = ("survivor", "guardian", "guardian_ad_litem")
COMPONENTS = (
    "protection_safety",
    "documentation_immigration",
    "justice_reparation",
    "labour_financial",
    "education",
    "health_psychosocial",
    "housing",
)
METHODS = ("document", "interview", "medical", "other")
URGENCIES = ("routine", "urgent")
GOAL_STATUSES = ("planned", "in_progress", "achieved", "dropped")
GUARDIAN_ROLES = ("guardian", "guardian_ad_litem")
WITHDRAWAL_REASONS = ("survivor_request", "guardian_request", "other")
DECLINE_REASONS = ("no_capacity", "not_eligible", "survivor_declined", "other")
CLOSE_REASONS = ("services_completed", "survivor_request", "transferred", "lost_contact", "other")
ERASURE_REASONS = ("survivor_request", "guardian_request", "legal_order")
# What a recipient did on a withdrawal or erasure notice (`notice.acknowledged`), and the legal
# obligation it keeps data under when it keeps any.
ACK_KINDS = ("consent.withdrawn", "case.erased")
ACK_ACTIONS = ("deleted", "had_none", "kept_legal_obligation")
RETENTION_BASES = (
    "criminal_proceedings",
    "court_order",
    "health_records_law",
    "statutory_retention",
    "other_legal_obligation",
)

AGENCY_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_AGENCY = re.compile(AGENCY_RE)
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


# --- scalar rules -------------------------------------------------------------------------------


def is_uuid4(value: object) -> bool:
    return isinstance(value, str) and bool(_UUID4.fullmatch(value))


def is_agency_id(value: object) -> bool:
    return isinstance(value, str) and bool(_AGENCY.fullmatch(value))


def parse_timestamp(value: object) -> datetime:
    """`YYYY-MM-DDTHH:MM:SSZ` exactly, as an aware UTC datetime; ValueError otherwise."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise ValueError("timestamps are exactly YYYY-MM-DDTHH:MM:SSZ")
    return _timestamp(value)


@functools.lru_cache(maxsize=4096)  # a log's timestamps repeat (one a second at most)
def _timestamp(value: str) -> datetime:
    try:  # the pattern fixed every field's place; datetime() checks the ranges (strptime is slow)
        return datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
            tzinfo=UTC,
        )
    except ValueError:
        raise ValueError("not a real date and time (YYYY-MM-DDTHH:MM:SSZ)") from None


def format_timestamp(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`, the year always four digits (strftime's %Y gives `999`)."""
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"
