"""The submission (ARCHITECTURE.md section 3): parse, verify and validate it, or build one.

`parse_submission` turns request bytes into a `Submission` or raises `BadRequest` (400);
`verify_integrity` checks origin, key, freshness, base64, digests and signature (422);
`validate_content` checks `facts` and `attrs` against the per-type schemas (422).
`build_submission` is the same contract seen from the client's side.

The encoding rules they apply live beside this module: `vocabulary` (the enumerations, ids
and timestamps), `schemas` (facts and attrs per event type), `canonical` (JCS, digests, the
signing input) and `parsing` (step 2's strict JSON).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from ledger.contract import crypto
from ledger.contract.canonical import (
    EVENT_DOMAIN,
    canonical_bytes,
    digest,
    digest_of,
    dumps,
    may_reorder,
    signing_input,
    utf16_ordered,
)
from ledger.contract.parsing import (
    FRACTIONS,
    canonical_text,
    check_text,
    loads,
    refuse_duplicates,
    refuse_fraction,
)
from ledger.contract.schemas import SCHEMAS
from ledger.contract.vocabulary import (
    CATEGORIES,
    format_timestamp,
    is_agency_id,
    is_uuid4,
    parse_timestamp,
)
from ledger.errors import BadRequest, Invalid, VerificationError

VERSION = 1
SALT_BYTES = 32
_KEY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\+[0-9a-f]{8}")

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


# --- the submission ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A parsed, structurally valid submission (step 2 passed). Its repr names the event,
    never the body: attrs and payload are personal data in plaintext."""

    body: dict[str, Any] = field(repr=False)
    fingerprint: bytes = field(repr=False)  # SHA-256 of JCS(body): identical resubmissions match it
    plain: bool = field(default=False, repr=False)  # `dumps` of every part is its JCS (step 2)

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
        return dumps(part).encode("utf-8") if self.plain else canonical_bytes(part)

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
    body, source = loads(raw, refuse_fraction)
    text = canonical_text(body)
    refuse_duplicates(source, text)
    return _submission(body, text)


def submission_from(body: Any) -> Submission:
    """Step 2 on an already parsed JSON value (one item of a batch)."""
    return _submission(body, canonical_text(body))


def _submission(body: Any, text: str) -> Submission:
    """Step 2 on a parsed body and its canonical text (`canonical_text`)."""
    _members(body, BODY_MEMBERS, "body")
    data = check_text(text)
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
    plain = not may_reorder(data)
    canonical = data if plain else utf16_ordered(text)
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
