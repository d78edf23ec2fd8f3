"""The event contract (ARCHITECTURE.md section 3): types, encoding rules, JCS, digests.

`parse_submission` turns request bytes into a `Submission` or raises `BadRequest` (400);
`verify_integrity` checks origin, key, freshness, base64, digests and signature (422);
`validate_content` checks `facts` and `attrs` against the per-type schemas (422).
`build_submission` is the same contract seen from the client's side.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import hmac
import json
import re
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from ledger.contract import crypto
from ledger.errors import BadRequest, Invalid, VerificationError

VERSION = 1
EVENT_DOMAIN = b"ledger-event-v1\n"
DIGEST_DOMAIN = b"ledger-digest-v1\n"
SALT_BYTES = 32

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

AGENCY_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_AGENCY = re.compile(AGENCY_RE)
_KEY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\+[0-9a-f]{8}")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BCP47 = re.compile(r"^(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:-[A-Za-z0-9]{1,8})*$")
_MAX_SAFE_INT = 2**53 - 1

BODY_MEMBERS = ("envelope", "attrs", "payload", "salt", "signature")
ENVELOPE_MEMBERS = (
    "v",
    "log",
    "event_id",
    "case_id",
    "type",
    "agency",
    "key",
    "signed_at",
    "facts",
    "attrs_digest",
    "payload_digests",
)


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
    due_by: Timestamp
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
}
EVENT_TYPES = tuple(SCHEMAS)


# --- canonical JSON -----------------------------------------------------------------------------

# A character beyond U+FFFF: UTF-16 writes it as surrogates, which sort below U+E000..U+FFFF.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _plain(value: Any) -> bool:
    """True when compact sorted `json.dumps` is exactly RFC 8785 for this value: no floats
    (ES6 number formatting), integers within JCS's range, member names without characters
    beyond U+FFFF (within the Basic Multilingual Plane code-point order is UTF-16 order)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                continue
            return False
        if kind is dict:
            for name, member in item.items():
                if type(name) is not str or not name.isascii() and _ASTRAL.search(name):
                    return False
                stack.append(member)
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False
    return True


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes (the `rfc8785` library, with a fast path for values
    where the standard library's compact sorted output is already canonical)."""
    if _plain(value):
        return _dumps(value).encode("utf-8")
    return rfc8785.dumps(value)


@functools.cache
def _encoder(sort_keys: bool, default: Any) -> json.JSONEncoder:
    return json.JSONEncoder(
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=sort_keys,
        allow_nan=False,
        check_circular=False,  # parsed JSON has no cycles; a caller's cycle is a RecursionError
        default=default,
    )


def _dumps(value: Any, *, sort_keys: bool = True, default: Any = None) -> str:
    """Compact JSON text, names sorted by code point, non-ASCII as itself (C, one pass; the
    encoder made once, not per call as `json.dumps` makes it)."""
    return _encoder(sort_keys, default).encode(value)


_ASTRAL_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")  # UTF-8 lead bytes beyond U+FFFF


def _may_reorder(data: bytes) -> bool:
    """Whether RFC 8785's order of member names (by UTF-16 code units) can differ from the
    code-point order of `_dumps` for this UTF-8 text: only when it holds a character beyond
    U+FFFF and one in U+E000..U+FFFF (lead bytes EE, EF). Five byte searches, no parsing."""
    return (b"\xee" in data or b"\xef" in data) and any(lead in data for lead in _ASTRAL_LEADS)


def _utf16_name(member: tuple[str, Any]) -> bytes:
    return member[0].encode("utf-16-be")


def _in_utf16_order(members: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(members) > 1:
        members.sort(key=_utf16_name)
    return dict(members)


def _utf16_ordered(text: str) -> bytes:
    """RFC 8785 bytes from the sorted text `text` (`_dumps` of a value step 2 accepted), its
    member names sorted again by UTF-16 code units, as RFC 8785 and `rfc8785` sort them: the
    rare path `_may_reorder` asks for. Parsed once more, each object's members put in that
    order as it is made (a Python call per object, none per value), and written out in it."""
    with _collector_paused():
        value = json.loads(text, object_pairs_hook=_in_utf16_order)
    return _dumps(value, sort_keys=False).encode("utf-8")


def _canonical(value: Any) -> bytes:
    """RFC 8785 bytes of (a part of) a body that step 2 accepted: its strings are valid
    Unicode and its numbers integers within JCS's range, so `_dumps` is canonical but for
    the order of names beyond U+FFFF, which `_may_reorder` rules out or `_utf16_ordered` mends."""
    text = _dumps(value)
    data = text.encode("utf-8")
    return _utf16_ordered(text) if _may_reorder(data) else data


# --- digests ------------------------------------------------------------------------------------


def derived_salt(salt: bytes, name: str) -> bytes:
    """`salt_x = HMAC-SHA256(key=salt, msg=x)`."""
    return hmac.new(salt, name.encode("utf-8"), hashlib.sha256).digest()


def digest(salt: bytes, name: str, value: Any) -> bytes:
    """`SHA-256(b"ledger-digest-v1\\n" + salt_x + JCS(v))`."""
    return digest_of(salt, name, jcs(value))


def canonical_fields(attrs: Any, payload: Mapping[str, Any]) -> dict[str, bytes]:
    """JCS bytes of `attrs` and of each payload category (an absent one as `null`): what the
    digests cover and what is sealed."""
    return {"attrs": jcs(attrs), **{c: jcs(payload.get(c)) for c in CATEGORIES}}


def digest_of(salt: bytes, name: str, canonical: bytes) -> bytes:
    """`digest` of a value given as its JCS bytes."""
    return hashlib.sha256(DIGEST_DOMAIN + derived_salt(salt, name) + canonical).digest()


def signing_input(envelope: Mapping[str, Any]) -> bytes:
    return EVENT_DOMAIN + jcs(envelope)


# --- parsing (step 2) ---------------------------------------------------------------------------
#
# Step 2 costs a small multiple of `json.loads` + `json.dumps` whatever a body holds: parsing
# and one canonical serialisation run in C, and every encoding rule is then checked on that
# canonical text with byte searches and regular expressions (also C), never value by value in
# Python. The canonical text is also what the fingerprint hashes. (A rare body costs a Python
# call per object: one with characters beyond U+FFFF and in U+E000..U+FFFF, whose names RFC
# 8785 may order otherwise: it is parsed once more in that order, `_utf16_ordered`.)

FRACTIONS = "numbers must be integers within ±(2^53 - 1); send fractions as strings"
MAX_DEPTH = 64


class _Fraction:
    """What `loads_strict` puts where the JSON has a fraction or an exponent (a JSON number
    that is not an integer): canonical encoding refuses it, so the batch item holding it is
    refused in its turn (step 2), not the whole batch."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<fraction>"


_FRACTION = _Fraction()


class _FractionFound(Exception):
    pass


def _mark_fraction(text: str) -> _Fraction:
    return _FRACTION


def _refuse_fraction(text: str) -> Any:
    raise _FractionFound


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _not_json(value: Any) -> Any:
    if value is _FRACTION:
        raise _FractionFound
    raise TypeError(f"{type(value).__name__} is not JSON")


def _fraction_as_null(value: Any) -> None:
    if value is _FRACTION:
        return None
    raise TypeError(f"{type(value).__name__} is not JSON")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while `json.loads` builds a value. None of the
    containers it makes can be garbage before it returns, but the collector's passes over them
    grow with the heap: 1 MB of nested arrays cost 2.5 times as much with it as without, 4 MB
    3 times (more than linear time). Turned on again only if it was on (another thread in here
    at the same time at worst lets it run a pass sooner)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _loads(raw: bytes, parse_float: Any) -> tuple[Any, str]:
    """The parsed value and the decoded text; NaN, Infinity and invalid UTF-8 refused."""
    try:
        text = raw.decode("utf-8")
        with _collector_paused():
            value = json.loads(text, parse_float=parse_float, parse_constant=_reject_constant)
        return value, text
    except _FractionFound as exc:
        raise BadRequest(FRACTIONS) from exc
    except RecursionError as exc:
        raise BadRequest("JSON is nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("body is not valid UTF-8 JSON") from exc


# A JSON string of the canonical text or of a valid request (an escape is a backslash and the
# character after it). Matched from the left, every quote it meets opens a string, so it never
# falls out of step with the text; possessive, so it never backtracks.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)


def _outside_strings(text: str) -> str:
    """The JSON text without its strings: brackets, commas, colons, numbers and literals."""
    return _STRING.sub("", text)


def _refuse_duplicates(source: str, canonical: str) -> None:
    """Refuse a member name repeated in one object of the request text `source`, given the
    canonical text of what `json.loads` made of it (which kept the last of repeated names).

    Every member has exactly one colon outside strings, in both texts, and parsing can only
    lose members (and their strings), never add any: the canonical text has fewer colons
    exactly when a name repeated. Only a `\\u003a` escape in the request adds colons to the
    parsed strings; then colons outside strings are counted instead."""
    if "\\u003a" in source or "\\u003A" in source:
        repeated = _outside_strings(source).count(":") != _outside_strings(canonical).count(":")
    else:
        repeated = source.count(":") != canonical.count(":")
    if repeated:
        raise BadRequest("JSON has a duplicate member name; send each member once")


def loads_strict(raw: bytes) -> Any:
    """Parse JSON, refusing duplicate member names, NaN/Infinity and invalid UTF-8 (BadRequest).
    A fraction parses as a marker that `submission_from` refuses (FRACTIONS)."""
    value, text = _loads(raw, _mark_fraction)
    try:
        canonical = _dumps(value, sort_keys=False, default=_fraction_as_null)
    except RecursionError as exc:
        raise BadRequest("JSON is nested too deeply") from exc
    _refuse_duplicates(text, canonical)
    return value


def _canonical_text(body: Any) -> str:
    """`_dumps` of a parsed body, its failures as refusals (a fraction, a caller's non-JSON)."""
    try:
        return _dumps(body, default=_not_json)
    except _FractionFound as exc:
        raise BadRequest(FRACTIONS) from exc
    except RecursionError as exc:
        raise BadRequest("JSON is nested too deeply") from exc
    except (TypeError, ValueError) as exc:
        raise BadRequest("body cannot be encoded as canonical JSON (RFC 8785)") from exc


# The escapes `json.dumps` writes but `\\\\`; once that is replaced, every backslash starts one.
_SHORT_ESCAPES = ('\\"', "\\n", "\\r", "\\t", "\\b", "\\f")
_CONTROL_ESCAPES = tuple(f"\\u{c:04x}" for c in range(0x20))


def _is_nfc(text: str) -> bool:
    """Whether every string of the canonical text is in NFC, from the whole text at once.

    The quotes between strings neither compose nor reorder with anything, so the text is in
    NFC when every string is. The converse fails only where an escape ends in a letter that
    composes with the combining mark after it (`\\n` + U+0303 reads as 'n' + U+0303 = 'ñ'):
    so when the text is not in NFC, it is checked again with every escape replaced by U+0000,
    which, like the control character, quote or backslash it stands for, composes with
    nothing. That answer is exact."""
    if unicodedata.is_normalized("NFC", text):
        return True
    if "\\" not in text:
        return False
    inert = text.replace("\\\\", "\x00")
    for escape in _SHORT_ESCAPES:
        inert = inert.replace(escape, "\x00")
    if "\\u" in inert:
        for escape in _CONTROL_ESCAPES:
            inert = inert.replace(escape, "\x00")
    return unicodedata.is_normalized("NFC", inert)


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _above(bound: str) -> str:
    """A pattern for the numerals of len(bound) digits greater than `bound`, as a trie (each
    digit read once: ",9(?:[1-9]...|0(?:[1-9]...|0(?:..." for bound 9007199254740991)."""
    first, rest = int(bound[0]), bound[1:]
    branches = [f"[{first + 1}-9][0-9]{{{len(rest)}}}"] if first < 9 else []
    if rest:
        branches.append(f"{first}(?:{_above(rest)})")
    return "|".join(branches)


# In the text outside strings with every byte but digits turned into a comma, a 16-digit integer
# beyond 2^53 - 1 (one that begins with 9, so the search skips from ",9" to ",9").
_UNSAFE_16 = re.compile(f",(?:{_above(str(_MAX_SAFE_INT))})".encode())
_DIGITS_AND_COMMAS = bytes(c if c in b"0123456789" else ord(",") for c in range(256))


def _check_numbers(structure: str) -> None:
    """Integers within ±(2^53 - 1) and no fractions, in the text outside strings, where every
    digit belongs to a number, `json.dumps` writes integers without leading zeros, and only
    a float (`repr`: 1.5, 1e-05, 1e+16) writes a point or an exponent's sign."""
    ascii_ = structure.encode("ascii")
    if b"." in ascii_ or b"e-" in ascii_ or b"e+" in ascii_:  # a caller's Python float
        raise BadRequest(FRACTIONS)
    digits = ascii_.translate(_DIGITS_AS_ZERO)
    if b"0" * 17 in digits or (
        b"0" * 16 in digits and _UNSAFE_16.search(ascii_.translate(_DIGITS_AND_COMMAS))
    ):
        raise BadRequest("integers must lie within ±(2^53 - 1)")


def _nesting(levels: int) -> re.Pattern[bytes]:
    """Brackets (`[` and `]` only) nested at most `levels` deep, as a possessive pattern that
    matches in one pass without backtracking."""
    pattern = b""
    for _ in range(levels):
        pattern = rb"(?:\[" + pattern + rb"\])*+"
    return re.compile(pattern)


_AT_MOST_MAX_DEPTH = _nesting(MAX_DEPTH)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _check_text(text: str) -> bytes:
    """The encoding rules of every string, number and container of a body, checked on its
    canonical text: strings valid Unicode (no lone surrogates) and NFC; integers within
    ±(2^53 - 1); at most MAX_DEPTH levels of containers (the body is level 1). Returns the
    text's UTF-8 bytes. A body that breaks several rules is refused for the first of these."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("strings must be valid Unicode (no lone surrogates)") from exc
    if not text.isascii() and not _is_nfc(text):
        raise BadRequest("strings must be in Unicode normalisation form C (NFC)")
    structure = None
    digits = data.translate(_DIGITS_AS_ZERO)
    if b"0" * 16 in digits or b"0." in digits or b"0e-00" in digits or b"0e+00" in digits:
        structure = _outside_strings(text)  # these may all lie in strings
        _check_numbers(structure)
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:  # fewer cannot nest too deeply
        if structure is None:
            structure = _outside_strings(text)
        brackets = structure.encode("ascii").translate(_BRACKETS, _NOT_BRACKETS)
        if not _AT_MOST_MAX_DEPTH.fullmatch(brackets):
            raise BadRequest(f"JSON is nested too deeply (at most {MAX_DEPTH} levels)")
    return data


# --- the submission ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A parsed, structurally valid submission (step 2 passed). Its repr names the event,
    never the body: attrs and payload are personal data in plaintext."""

    body: dict[str, Any] = field(repr=False)
    fingerprint: bytes = field(repr=False)  # SHA-256 of JCS(body): identical resubmissions match it
    plain: bool = field(default=False, repr=False)  # `_dumps` of every part is its JCS (step 2)

    def __repr__(self) -> str:
        return (
            f"Submission(event_id={self.event_id!r}, case_id={self.case_id!r}, type={self.type!r})"
        )

    @property
    def envelope(self) -> dict[str, Any]:
        return self.body["envelope"]  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return self.envelope["type"]  # type: ignore[no-any-return]

    @property
    def case_id(self) -> str:
        return self.envelope["case_id"]  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        return self.envelope["event_id"]  # type: ignore[no-any-return]

    @property
    def agency(self) -> str:
        return self.envelope["agency"]  # type: ignore[no-any-return]

    @property
    def facts(self) -> dict[str, Any]:
        return self.envelope["facts"]  # type: ignore[no-any-return]

    @property
    def attrs(self) -> dict[str, Any]:
        return self.body["attrs"]  # type: ignore[no-any-return]

    @property
    def payload(self) -> dict[str, Any]:
        return self.body["payload"]  # type: ignore[no-any-return]

    def jcs_of(self, part: Any) -> bytes:
        """JCS bytes of a part of the body (step 2 vouched for its strings and numbers)."""
        if part is None:  # most payload categories are absent
            return b"null"
        return _dumps(part).encode("utf-8") if self.plain else _canonical(part)

    @functools.cached_property
    def canonical(self) -> dict[str, bytes]:
        """JCS bytes of `attrs` and of each payload category (an absent one as `null`),
        made once for both the digests and the sealed boxes."""
        payload = self.payload
        return {
            "attrs": self.jcs_of(self.attrs),
            **{c: self.jcs_of(payload.get(c)) for c in CATEGORIES},
        }


def _members(obj: Any, expected: tuple[str, ...], what: str) -> None:
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object")
    missing = [m for m in expected if m not in obj]
    unknown = sorted(m for m in obj if m not in expected)
    if missing:
        raise BadRequest(f"{what} is missing member(s): {', '.join(missing)}")
    if unknown:
        raise BadRequest(f"{what} has unknown member(s); allowed: {', '.join(expected)}")


def parse_submission(raw: bytes) -> Submission:
    """Step 2 of the refusal order: JSON, members, types, version, event type, ids, timestamps."""
    body, source = _loads(raw, _refuse_fraction)
    text = _canonical_text(body)
    _refuse_duplicates(source, text)
    return _submission(body, text)


def submission_from(body: Any) -> Submission:
    """Step 2 on an already parsed JSON value (one item of a batch)."""
    return _submission(body, _canonical_text(body))


def _submission(body: Any, text: str) -> Submission:
    """Step 2 on a parsed body and its canonical text (`_canonical_text`)."""
    _members(body, BODY_MEMBERS, "body")
    data = _check_text(text)
    env = body["envelope"]
    _members(env, ENVELOPE_MEMBERS, "envelope")
    if type(env["v"]) is not int or env["v"] != VERSION:
        raise BadRequest("envelope.v must be the integer 1")
    for name in ("log", "attrs_digest"):
        if not isinstance(env[name], str) or not env[name]:
            raise BadRequest(f"envelope.{name} must be a non-empty string")
    for name in ("event_id", "case_id"):
        if not is_uuid4(env[name]):
            raise BadRequest(f"envelope.{name} must be a lowercase hyphenated version-4 UUID")
    if not isinstance(env["type"], str) or env["type"] not in SCHEMAS:
        raise BadRequest("envelope.type is not a known event type; see the OpenAPI schema")
    if not is_agency_id(env["agency"]):
        raise BadRequest("envelope.agency must match [a-z0-9][a-z0-9._-]{0,62}")
    if not isinstance(env["key"], str) or not _KEY_ID.fullmatch(env["key"]):
        raise BadRequest("envelope.key must be <agency id>+<8 lowercase hex>")
    try:
        parse_timestamp(env["signed_at"])
    except ValueError as exc:
        raise BadRequest("envelope.signed_at must be exactly YYYY-MM-DDTHH:MM:SSZ") from exc
    if not isinstance(env["facts"], dict):
        raise BadRequest("envelope.facts must be a JSON object")
    _members(env["payload_digests"], CATEGORIES, "envelope.payload_digests")
    if not all(isinstance(v, str) for v in env["payload_digests"].values()):
        raise BadRequest("envelope.payload_digests values must be base64 strings")
    if not isinstance(body["attrs"], dict):
        raise BadRequest("attrs must be a JSON object")
    payload = body["payload"]
    if not isinstance(payload, dict):
        raise BadRequest("payload must be a JSON object keyed by category")
    if any(name not in CATEGORIES for name in payload):
        raise BadRequest(f"payload has unknown categories; allowed: {', '.join(CATEGORIES)}")
    for name in ("salt", "signature"):
        if not isinstance(body[name], str):
            raise BadRequest(f"{name} must be a base64 string")
    plain = not _may_reorder(data)
    canonical = data if plain else _utf16_ordered(text)
    return Submission(body=body, fingerprint=hashlib.sha256(canonical).digest(), plain=plain)


def _b64(value: str, length: int, what: str) -> bytes:
    try:
        raw = crypto.b64decode_strict(value)
    except ValueError as exc:
        raise VerificationError(f"{what} is not canonical base64 (RFC 4648 §4, padded)") from exc
    if len(raw) != length:
        raise VerificationError(f"{what} must decode to {length} bytes")
    return raw


def verify_integrity(
    sub: Submission,
    *,
    origin: str,
    verify_key: crypto.VerifyKey | None,
    now: datetime,
    freshness_s: int,
) -> None:
    """Step 6: origin, key, freshness, base64, signature and digests; VerificationError (422)."""
    env = sub.envelope
    # 1. The event is bound to this deployment's log.
    if env["log"] != origin:
        raise VerificationError("envelope.log is not this ledger's origin; GET /v1/health tells it")
    # 2. The key is a registered, unrevoked key of the envelope's agency.
    if verify_key is None:
        raise VerificationError(
            "envelope.key is not a registered, unrevoked key of envelope.agency"
        )
    # 3. Freshness: signed within the window around the server clock.
    skew = abs((parse_timestamp(env["signed_at"]) - now).total_seconds())
    if skew > freshness_s:
        raise VerificationError(
            f"envelope.signed_at is more than {freshness_s} s from the server clock; "
            "sign again with the current time"
        )
    # 4. Encodings of salt, signature and digests.
    salt = _b64(sub.body["salt"], SALT_BYTES, "salt")
    signature = _b64(sub.body["signature"], 64, "signature")
    attrs_digest = _b64(env["attrs_digest"], 32, "envelope.attrs_digest")
    payload_digests = {
        c: _b64(env["payload_digests"][c], 32, f"envelope.payload_digests.{c}") for c in CATEGORIES
    }
    # 5. The signature over the canonical envelope.
    try:
        crypto.verify(verify_key, EVENT_DOMAIN + sub.jcs_of(env), signature)
    except crypto.BadSignature as exc:
        raise VerificationError("signature does not verify over the envelope") from exc
    # 6. The digests bind attrs and every payload category to the signed envelope.
    canonical = sub.canonical
    if not hmac.compare_digest(digest_of(salt, "attrs", canonical["attrs"]), attrs_digest):
        raise VerificationError("attrs do not match envelope.attrs_digest")
    for category in CATEGORIES:
        calculated = digest_of(salt, category, canonical[category])
        if not hmac.compare_digest(calculated, payload_digests[category]):
            raise VerificationError(f"payload.{category} does not match its digest")


def _describe(exc: ValidationError, where: str) -> str:
    """A validation message naming locations and rules, never the submitted values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False)[:5]:
        path = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":  # the location is the submitted name: withhold it
            path, msg = path[:-1], "has a member that is not in the schema"
        loc = ".".join(path)
        parts.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)


def validate_content(sub: Submission) -> tuple[BaseModel, BaseModel]:
    """Step 8 (schemas): facts and attrs of the event's type, and `minor` against the age band."""
    schema = SCHEMAS[sub.type]
    try:
        facts = schema.facts.model_validate(sub.facts)
    except ValidationError as exc:
        raise Invalid(f"invalid facts: {_describe(exc, 'facts')}") from exc
    try:
        attrs = schema.attrs.model_validate(sub.attrs)
    except ValidationError as exc:
        raise Invalid(f"invalid attrs: {_describe(exc, 'attrs')}") from exc
    if sub.type == "data.shared" and any(v is not None for v in sub.payload.values()):
        raise Invalid("data.shared records a disclosure: its payload must be empty")
    band = getattr(attrs, "age_band", None)
    if band is not None and facts.minor != (band != "adult"):  # type: ignore[attr-defined]
        raise Invalid("facts.minor must be true exactly when attrs.age_band is not 'adult'")
    return facts, attrs


# --- the client's side --------------------------------------------------------------------------


def _refuse_floats(value: Any, where: str) -> None:
    """ValueError when `value` holds a float anywhere (before anything is signed)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            raise ValueError(f"{where}: {FRACTIONS}")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def build_submission(
    key: crypto.SigningKey,
    *,
    log: str,
    case_id: str,
    type: str,
    facts: dict[str, Any],
    attrs: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    event_id: str | None = None,
    signed_at: datetime | None = None,
    salt: bytes | None = None,
) -> dict[str, Any]:
    """Build and sign a submission body with a fresh salt (the agency SDK's core). A float in
    facts, attrs or payload is a ValueError: the ledger refuses fractions (send them as strings)."""
    attrs = {} if attrs is None else attrs
    payload = {} if payload is None else payload
    for where, part in (("facts", facts), ("attrs", attrs), ("payload", payload)):
        _refuse_floats(part, where)
    salt = crypto.random_bytes(SALT_BYTES) if salt is None else salt
    envelope = {
        "v": VERSION,
        "log": log,
        "event_id": event_id or str(uuid.uuid4()),
        "case_id": case_id,
        "type": type,
        "agency": key.name,
        "key": key.verify_key.key_id,
        "signed_at": format_timestamp(signed_at or datetime.now(UTC)),
        "facts": facts,
        "attrs_digest": crypto.b64(digest(salt, "attrs", attrs)),
        "payload_digests": {c: crypto.b64(digest(salt, c, payload.get(c))) for c in CATEGORIES},
    }
    signature = crypto.sign(key, signing_input(envelope))
    return {
        "envelope": envelope,
        "attrs": attrs,
        "payload": payload,
        "salt": crypto.b64(salt),
        "signature": crypto.b64(signature),
    }
