"""The event contract's encoding rules and refusals (ARCHITECTURE.md section 3).

Each test replays one attack or mistake against the known-answer vector's submission
(shared/vectors/event/v1.json) and is named after it. Mutations are re-signed with the vector's
key, so each submission is refused for exactly the reason the test names and nothing else:
parse_submission -> BadRequest (400), verify_integrity -> VerificationError (422),
validate_content -> Invalid (422). Wherever the offending value is a string it carries MARKER,
and no message may repeat it: refusals never echo what was submitted.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger.contract import canonical, crypto, envelope, parsing, vocabulary
from ledger.errors import BadRequest, Invalid, VerificationError
from tests.conftest import VECTORS


def _fixed_bug(*, reason: str, strict: bool = True, raises: object = None) -> pytest.MarkDecorator:
    """Marks a test that replays a bug found in review and since fixed (reason: the bug)."""
    return pytest.mark.regression(reason)


VECTOR_PATH = VECTORS / "event" / "v1.json"
V: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))

SEED = bytes.fromhex(V["agency_signing_key_seed_hex"])
KEY = crypto.signing_key_from_seed(V["agency_id"], SEED)
OTHER_KEY = crypto.signing_key_from_seed(V["agency_id"], bytes(range(100, 132)))
SALT = crypto.b64decode_strict(V["salt_b64"])
ENVELOPE = V["envelope"]
ORIGIN = ENVELOPE["log"]
NOW = vocabulary.parse_timestamp(ENVELOPE["signed_at"])
FRESHNESS_S = 300
MARKER = "MARKER-7f3a"
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


# --- building submissions -----------------------------------------------------------------------


def vector() -> dict[str, Any]:
    """A fresh copy of the vector's submission (validly signed)."""
    return copy.deepcopy(V["submission"])


def build(key: crypto.SigningKey = KEY, **changes: Any) -> dict[str, Any]:
    """The vector's submission rebuilt and signed by `build_submission`, with `changes`."""
    args: dict[str, Any] = {
        "log": ORIGIN,
        "case_id": ENVELOPE["case_id"],
        "type": ENVELOPE["type"],
        "facts": copy.deepcopy(ENVELOPE["facts"]),
        "attrs": copy.deepcopy(V["attrs"]),
        "payload": copy.deepcopy(V["payload"]),
        "event_id": ENVELOPE["event_id"],
        "signed_at": NOW,
        "salt": SALT,
    }
    args.update(changes)
    return envelope.build_submission(key, **args)


def resign(body: dict[str, Any], key: crypto.SigningKey = KEY) -> dict[str, Any]:
    """Sign the (mutated) envelope again, so the signature is not what is wrong."""
    body["signature"] = crypto.b64(crypto.sign(key, canonical.signing_input(body["envelope"])))
    return body


def with_envelope(**changes: Any) -> dict[str, Any]:
    """The vector with envelope members replaced, re-signed."""
    body = vector()
    body["envelope"].update(changes)
    return resign(body)


def encode(body: dict[str, Any]) -> bytes:
    """JSON bytes (ASCII, non-ASCII and lone surrogates as \\u escapes)."""
    return json.dumps(body).encode("ascii")


def flip_padding_bits(text: str) -> str:
    """Same decoded bytes, but non-zero padding bits: the base64 is no longer canonical."""
    stem = text.rstrip("=")
    last = B64_ALPHABET[B64_ALPHABET.index(stem[-1]) ^ 1]
    mutated = stem[:-1] + last + text[len(stem) :]
    assert base64.b64decode(mutated) == base64.b64decode(text)
    return mutated


def nested(levels: int, leaf: Any) -> Any:
    """`levels` arrays, one inside the other, around `leaf`."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def payload_of_depth(levels: int, leaf: Any) -> dict[str, Any]:
    """A payload that makes the whole body `levels` containers deep (the body is level 1,
    the payload level 2), with `leaf` innermost; an empty container leaf is a level itself."""
    arrays = levels - 2 - (1 if isinstance(leaf, list | dict) else 0)
    return {"notes": nested(arrays, leaf)}


# --- the three steps ------------------------------------------------------------------------------


def parse(body: dict[str, Any] | bytes) -> envelope.Submission:
    return envelope.parse_submission(body if isinstance(body, bytes) else encode(body))


def bad_request(body: dict[str, Any] | bytes, match: str) -> BadRequest:
    with pytest.raises(BadRequest, match=match) as info:
        parse(body)
    assert MARKER not in str(info.value)
    return info.value


def verify(
    body: dict[str, Any] | bytes,
    *,
    origin: str = ORIGIN,
    verify_key: crypto.VerifyKey | None = KEY.verify_key,
    now: datetime = NOW,
) -> envelope.Submission:
    sub = parse(body)
    envelope.verify_integrity(
        sub, origin=origin, verify_key=verify_key, now=now, freshness_s=FRESHNESS_S
    )
    return sub


def unverified(body: dict[str, Any], match: str, **kw: Any) -> VerificationError:
    with pytest.raises(VerificationError, match=match) as info:
        verify(body, **kw)
    assert MARKER not in str(info.value)
    return info.value


def valid(**changes: Any) -> None:
    envelope.validate_content(verify(build(**changes)))


def invalid(match: str, **changes: Any) -> Invalid:
    """Signed, fresh and intact (verify_integrity passes), but the content is refused."""
    sub = verify(build(**changes))
    with pytest.raises(Invalid, match=match) as info:
        envelope.validate_content(sub)
    assert not isinstance(info.value, VerificationError)
    assert MARKER not in str(info.value)
    return info.value


def consent_facts(**changes: Any) -> dict[str, Any]:
    facts = copy.deepcopy(ENVELOPE["facts"])
    facts.update(changes)
    return facts


def test_vector_submission_passes_every_step() -> None:
    """The base every other test mutates: accepted as it is and as rebuilt by the helpers."""
    for body in (vector(), build(), with_envelope(), resign(vector())):
        assert body == V["submission"]
        envelope.validate_content(verify(body))


# --- 400: not JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"{", b'{"envelope": }', b"\x00", b"{'envelope': 1}"]
)
def test_body_that_is_not_json_is_refused(raw: bytes) -> None:
    bad_request(raw, "not valid UTF-8 JSON")


def test_invalid_utf8_is_refused() -> None:
    raw = encode(vector()).replace(b"Ana Ejemplo", b"Ana \xff\xfe Ejemplo")
    assert raw != encode(vector())
    bad_request(raw, "not valid UTF-8 JSON")


def test_utf8_byte_order_mark_is_refused() -> None:
    bad_request(b"\xef\xbb\xbf" + encode(vector()), "not valid UTF-8 JSON")


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"envelope"', b"1"])
def test_body_that_is_not_an_object_is_refused(raw: bytes) -> None:
    bad_request(raw, "body must be a JSON object")


# --- 400: duplicate member names ------------------------------------------------------------------


def test_duplicate_member_name_at_top_level_is_refused() -> None:
    raw = encode(vector())
    raw = b'{"salt": "' + MARKER.encode() + b'", ' + raw[1:]
    bad_request(raw, "duplicate member name")


def test_duplicate_member_name_in_the_envelope_is_refused() -> None:
    raw = encode(vector())
    smuggled = b'"envelope": {"type": "case.opened", '
    raw = raw.replace(b'"envelope": {', smuggled, 1)
    assert raw.count(b'"type": ') == 2
    bad_request(raw, "duplicate member name")


def test_duplicate_member_name_nested_deep_in_payload_is_refused() -> None:
    payload = {"notes": {"a": [{"b": {"c": [{"name": "Ana"}]}}]}}
    raw = encode(build(payload=payload))
    raw = raw.replace(b'"name": "Ana"', b'"name": "Ana", "name": "' + MARKER.encode() + b'"')
    bad_request(raw, "duplicate member name")


def test_duplicate_member_name_in_facts_is_refused() -> None:
    raw = encode(vector()).replace(
        b'"given_by": "survivor"', b'"given_by": "survivor", "given_by": "guardian"'
    )
    bad_request(raw, "duplicate member name")


# --- 400: numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(constant: bytes) -> None:
    raw = encode(build(payload={"notes": {"score": 1}})).replace(
        b'"score": 1', b'"score": ' + constant
    )
    assert constant in raw
    bad_request(raw, "not valid UTF-8 JSON")


def test_number_beyond_double_range_is_refused() -> None:
    """1e400 (beyond a double: JCS could not encode it) is refused as every fraction is."""
    raw = encode(build(payload={"notes": {"score": 1}})).replace(b'"score": 1', b'"score": 1e400')
    bad_request(raw, re.escape(parsing.FRACTIONS))


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64, 10**30])
@pytest.mark.parametrize("where", ["payload", "attrs", "facts"])
def test_integer_beyond_2_pow_53_is_refused(where: str, value: int) -> None:
    """JCS cannot encode such an integer, so it cannot be signed: parsing refuses it."""
    body = vector()
    if where == "payload":
        body["payload"]["identity"]["count"] = value
    elif where == "attrs":
        body["attrs"]["count"] = value
    else:
        body["envelope"]["facts"]["count"] = value
    bad_request(body, "integers must lie within")


@pytest.mark.parametrize("value", [2**53 - 1, -(2**53 - 1)])
def test_largest_safe_integer_is_accepted(value: int) -> None:
    verify(build(payload={"notes": {"count": value}}))


def test_integer_too_long_to_parse_is_refused() -> None:
    raw = encode(build(payload={"notes": {"count": 1}})).replace(
        b'"count": 1', b'"count": ' + b"9" * 5000
    )
    bad_request(raw, "JSON|integers")


# --- 400: nesting -------------------------------------------------------------------------------


def test_nesting_deeper_than_64_is_refused() -> None:
    bad_request(build(payload={"notes": nested(100, "x")}), "nested too deeply")


def test_nesting_thousands_deep_is_refused_without_crashing() -> None:
    bad_request(b"[" * 200_000 + b"]" * 200_000, "nested too deeply")
    raw = encode(vector()).replace(
        b'"notes": "Necesita', b'"x": ' + b"[" * 200_000 + b"]" * 200_000 + b', "notes": "Necesita'
    )
    bad_request(raw, "nested too deeply")


@pytest.mark.parametrize(
    "leaf", ["x", 0, None, [], {}], ids=["string", "integer", "null", "empty-array", "empty-object"]
)
def test_nesting_of_64_levels_is_accepted(leaf: Any) -> None:
    verify(build(payload=payload_of_depth(64, leaf)))


@pytest.mark.parametrize(
    "leaf",
    [
        "x",
        0,
        None,
        pytest.param(
            [],
            marks=_fixed_bug(
                strict=True,
                reason=(
                    "envelope.py:335 check_text limits the depth of values, not of containers: an "
                    "empty array or object at level 65 is accepted, a scalar at level 65 is not"
                ),
            ),
        ),
        pytest.param(
            {},
            marks=_fixed_bug(
                strict=True,
                reason=(
                    "envelope.py:335 check_text limits the depth of values, not of containers: an "
                    "empty array or object at level 65 is accepted, a scalar at level 65 is not"
                ),
            ),
        ),
    ],
    ids=["string", "integer", "null", "empty-array", "empty-object"],
)
def test_nesting_of_65_levels_is_refused(leaf: Any) -> None:
    bad_request(build(payload=payload_of_depth(65, leaf)), "nested too deeply")


# --- 400: members of the body and the envelope ----------------------------------------------------


@pytest.mark.parametrize("member", envelope.BODY_MEMBERS)
def test_missing_body_member_is_refused(member: str) -> None:
    body = vector()
    del body[member]
    bad_request(body, f"body is missing member.*{member}")


def test_unknown_body_member_is_refused() -> None:
    body = vector()
    body[MARKER] = MARKER
    bad_request(body, "body has unknown member")


@pytest.mark.parametrize("member", envelope.ENVELOPE_MEMBERS)
def test_missing_envelope_member_is_refused(member: str) -> None:
    body = vector()
    del body["envelope"][member]
    bad_request(resign(body), f"envelope is missing member.*{member}")


def test_unknown_envelope_member_is_refused() -> None:
    bad_request(with_envelope(**{MARKER: MARKER}), "envelope has unknown member")


@pytest.mark.parametrize("member", ["facts", "payload_digests"])
@pytest.mark.parametrize("value", [[], "x", None, 1])
def test_envelope_object_member_of_the_wrong_kind_is_refused(member: str, value: Any) -> None:
    bad_request(with_envelope(**{member: value}), f"envelope.{member}")


@pytest.mark.parametrize("member", ["attrs", "payload"])
@pytest.mark.parametrize("value", [[], "x", None, 1])
def test_attrs_or_payload_of_the_wrong_kind_is_refused(member: str, value: Any) -> None:
    body = vector()
    body[member] = value
    bad_request(body, f"{member} must be a JSON object")


@pytest.mark.parametrize("member", ["salt", "signature"])
@pytest.mark.parametrize("value", [None, 1, [], {}])
def test_salt_or_signature_that_is_not_a_string_is_refused(member: str, value: Any) -> None:
    body = vector()
    body[member] = value
    bad_request(body, f"{member} must be a base64 string")


@pytest.mark.parametrize("member", ["log", "attrs_digest"])
@pytest.mark.parametrize("value", ["", None, 1, []])
def test_envelope_string_member_that_is_empty_or_not_a_string_is_refused(
    member: str, value: Any
) -> None:
    bad_request(with_envelope(**{member: value}), f"envelope.{member} must be a non-empty string")


@pytest.mark.parametrize(
    "value",
    ["", None, 1, [], "zz", "ngo-esperanza+F2C1BB7C", "ngo-esperanza+f2c1bb7", "Ngo+f2c1bb7c"],
)
def test_malformed_key_id_is_refused(value: Any) -> None:
    bad_request(with_envelope(key=value), "envelope.key must be <agency id>\\+<8 lowercase hex>")


# --- 400: version and type ------------------------------------------------------------------------


@pytest.mark.parametrize("v", [2, 0, -1, True, "1", None, [1]], ids=repr)
def test_version_other_than_integer_1_is_refused(v: Any) -> None:
    bad_request(with_envelope(v=v), "envelope.v must be the integer 1")


def test_version_written_as_a_fraction_is_refused() -> None:
    bad_request(with_envelope(v=1.0), "send fractions as strings")


@pytest.mark.parametrize(
    "event_type", [MARKER, "consent.GRANTED", "consent.granted ", "", "consent", 1, None]
)
def test_unknown_type_is_refused(event_type: Any) -> None:
    bad_request(with_envelope(type=event_type), "envelope.type is not a known event type")


_TYPE_UNHASHABLE = _fixed_bug(
    strict=True,
    raises=TypeError,
    reason=(
        "envelope.py:444 `env['type'] not in SCHEMAS` raises TypeError (unhashable) for a JSON "
        "array or object: a 500 instead of the 400 for a mistyped envelope member"
    ),
)


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param([], marks=_TYPE_UNHASHABLE),
        pytest.param({}, marks=_TYPE_UNHASHABLE),
        pytest.param(["consent.granted"], marks=_TYPE_UNHASHABLE),
    ],
    ids=["empty-array", "empty-object", "array-of-type"],
)
def test_type_that_is_an_array_or_object_is_refused(event_type: Any) -> None:
    bad_request(with_envelope(type=event_type), "envelope.type")


# --- 400: ids and timestamps ----------------------------------------------------------------------

_UUID = ENVELOPE["event_id"]
_NEWLINE_UUID = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:67/84 _UUID4 uses re.match with `$`, which also matches before a trailing "
        "newline: 'uuid\\n' is accepted as a version-4 UUID"
    ),
)


@pytest.mark.parametrize("field", ["event_id", "case_id"])
@pytest.mark.parametrize(
    "value",
    [
        _UUID.upper(),
        _UUID[:9] + _UUID[9:].upper(),
        str(uuid.uuid1()),
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "example.org")),
        "0b6f6f3e-2c1a-4c59-7e55-3f0b8b7f6a10",  # variant bits not 10xx
        _UUID.replace("-", ""),
        "{" + _UUID + "}",
        "urn:uuid:" + _UUID,
        _UUID[:-1],
        _UUID + "0",
        " " + _UUID,
        "00000000-0000-0000-0000-000000000000",
        MARKER,
        "",
        1,
        None,
        pytest.param(_UUID + "\n", marks=_NEWLINE_UUID),
    ],
    ids=[
        "upper",
        "upper-tail",
        "v1",
        "v5",
        "variant",
        "unhyphenated",
        "braces",
        "urn",
        "short",
        "long",
        "space",
        "nil",
        "marker",
        "empty",
        "int",
        "null",
        "newline",
    ],
)
def test_malformed_uuid_is_refused(field: str, value: Any) -> None:
    if isinstance(value, str) and field == "event_id":
        body = build(event_id=value) if value else with_envelope(event_id=value)
    elif isinstance(value, str):
        body = build(case_id=value)
    else:
        body = with_envelope(**{field: value})
    bad_request(body, f"envelope.{field} must be a lowercase hyphenated version-4 UUID")


_FULLWIDTH_YEAR = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:68/95 `\\d` in _TIMESTAMP and strptime's %Y match any Unicode digit: a "
        "fullwidth year '\\uff12\\uff10\\uff12\\uff16' is accepted and int() reads it as 2026"
    ),
)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29T10:15:00.5Z",
        "2026-11-29T10:15:00.000Z",
        "2026-11-29T10:15:00+00:00",
        "2026-11-29T10:15:00",
        "2026-11-29T10:15Z",
        "2026-11-29 10:15:00Z",
        "2026-11-29t10:15:00z",
        "2026-02-30T10:15:00Z",
        "2026-13-01T10:15:00Z",
        "2026-11-31T10:15:00Z",
        "2026-11-29T24:00:00Z",
        "2026-11-29T10:60:00Z",
        "2026-11-29T23:59:60Z",
        "20261129T101500Z",
        "2026-11-29T10:15:00Z\n",
        " 2026-11-29T10:15:00Z",
        "2026-11-29",
        MARKER,
        "",
        1795602900,
        None,
        pytest.param("\uff12\uff10\uff12\uff16-11-29T10:15:00Z", marks=_FULLWIDTH_YEAR),
    ],
    ids=repr,
)
def test_malformed_signed_at_is_refused(value: Any) -> None:
    bad_request(with_envelope(signed_at=value), "envelope.signed_at must be exactly")


_NEWLINE_AGENCY = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:65/88 AGENCY_RE ends in `$` and is used with re.match: 'ngo-esperanza\\n' "
        "is accepted as an agency id"
    ),
)


@pytest.mark.parametrize(
    "agency",
    [
        "NGO-Esperanza",
        "ngo-Esperanza",
        "-ngo",
        ".ngo",
        "_ngo",
        "ngo esperanza",
        "ngo+x",
        "ngo/esperanza",
        "ngó",
        "a" * 64,
        "",
        MARKER,
        pytest.param("ngo-esperanza\n", marks=_NEWLINE_AGENCY),
    ],
    ids=repr,
)
def test_malformed_agency_id_is_refused(agency: str) -> None:
    """Signed by a key carrying that name, so only the agency id's shape is wrong."""
    body = (
        build(key=crypto.signing_key_from_seed(agency, SEED))
        if agency
        else with_envelope(agency=agency)
    )
    assert body["envelope"]["agency"] == agency
    bad_request(body, r"envelope.agency must match")


@pytest.mark.parametrize("agency", ["a", "a" * 63, "0", "ngo.esp_er-anza9"])
def test_agency_id_edge_shapes_are_accepted(agency: str) -> None:
    parse(build(key=crypto.signing_key_from_seed(agency, SEED)))


# --- 400: payload categories and their digests ----------------------------------------------------


@pytest.mark.parametrize("category", [MARKER, "Identity", "attrs", "", "notes "])
def test_payload_with_an_unknown_category_is_refused(category: str) -> None:
    body = build(payload={**V["payload"], category: {"note": MARKER}})
    bad_request(body, "payload has unknown categories")


@pytest.mark.parametrize("category", vocabulary.CATEGORIES)
def test_payload_digests_missing_one_category_is_refused(category: str) -> None:
    body = vector()
    del body["envelope"]["payload_digests"][category]
    bad_request(resign(body), f"payload_digests is missing member.*{category}")


def test_payload_digests_with_an_unknown_category_is_refused() -> None:
    body = vector()
    body["envelope"]["payload_digests"][MARKER] = V["envelope"]["payload_digests"]["notes"]
    bad_request(resign(body), "payload_digests has unknown member")


@pytest.mark.parametrize("value", [None, 1, [], {}])
def test_payload_digest_that_is_not_a_string_is_refused(value: Any) -> None:
    body = vector()
    body["envelope"]["payload_digests"]["notes"] = value
    bad_request(resign(body), "payload_digests values must be base64 strings")


# --- 400: strings ---------------------------------------------------------------------------------

DECOMPOSED = "e\u0301"  # 'e' + combining acute: NFD of 'é'


@pytest.mark.parametrize(
    "where",
    [
        "payload-value",
        "payload-member-name",
        "attrs-value",
        "attrs-member-name",
        "facts-value",
        "envelope-log",
        "envelope-key",
    ],
)
def test_non_nfc_string_anywhere_is_refused(where: str) -> None:
    text = f"Jos{DECOMPOSED} {MARKER}"
    if where == "payload-value":
        body = build(payload={"identity": {"name": text}})
    elif where == "payload-member-name":
        body = build(payload={"identity": {text: "x"}})
    elif where == "attrs-value":
        body = build(attrs={**V["attrs"], "notice_version": text})
    elif where == "attrs-member-name":
        body = build(attrs={**V["attrs"], text: 1})
    elif where == "facts-value":
        body = build(facts=consent_facts(recipients=[text]))
    elif where == "envelope-log":
        body = build(log=text)
    else:
        body = with_envelope(key=text)
    bad_request(body, "normalisation form C")


def test_non_nfc_string_as_raw_utf8_is_refused() -> None:
    body = build(payload={"identity": {"name": f"Jos{DECOMPOSED}"}})
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert "e\u0301".encode() in raw
    bad_request(raw, "normalisation form C")


def test_nfc_string_as_raw_utf8_is_accepted() -> None:
    body = build(
        payload={"identity": {"name": "Jos\u00e9 \u00d1u\u00f1ez \u4e2d\u6587 \U0001f600"}}
    )
    verify(json.dumps(body, ensure_ascii=False).encode("utf-8"))


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "\udbff"])
@pytest.mark.parametrize("where", ["payload-value", "payload-member-name", "attrs-value"])
def test_lone_surrogate_escape_is_refused(where: str, surrogate: str) -> None:
    """JCS cannot encode a lone surrogate, so this one cannot be signed: parsing refuses it."""
    body = vector()
    if where == "payload-value":
        body["payload"]["identity"]["name"] = f"Ana {surrogate}"
    elif where == "payload-member-name":
        body["payload"]["identity"][f"x{surrogate}"] = 1
    else:
        body["attrs"]["notice_version"] = surrogate
    raw = encode(body)
    assert b"\\ud" in raw
    bad_request(raw, "lone surrogates")


def test_surrogate_pair_escape_is_accepted() -> None:
    body = build(payload={"notes": "\U0001f600"})
    raw = encode(body)
    assert b"\\ud83d\\ude00" in raw
    verify(body)


# --- 422: verify_integrity ------------------------------------------------------------------------


def test_event_for_another_log_is_refused() -> None:
    unverified(vector(), "envelope.log is not this ledger's origin", origin="other.example/log")
    unverified(build(log=f"{MARKER}.example/log"), "envelope.log is not this ledger's origin")


def test_event_without_a_registered_key_is_refused() -> None:
    unverified(vector(), "not a registered, unrevoked key", verify_key=None)


@pytest.mark.parametrize("seconds", [301, -301, 3600, -86400])
def test_stale_or_future_signed_at_is_refused(seconds: int) -> None:
    """Signed `seconds` before the server clock (negative: after it, a future time)."""
    body = build(signed_at=NOW - timedelta(seconds=seconds))
    unverified(body, "more than 300 s from the server clock")
    unverified(vector(), "more than 300 s", now=NOW + timedelta(seconds=seconds))


@pytest.mark.parametrize("seconds", [299, -299, 300, -300, 0])
def test_signed_at_within_300_seconds_is_accepted(seconds: int) -> None:
    verify(build(signed_at=NOW - timedelta(seconds=seconds)))
    verify(vector(), now=NOW + timedelta(seconds=seconds))


def _salt_without_padding() -> dict[str, Any]:
    body = vector()
    body["salt"] = body["salt"].rstrip("=")
    return body


def _salt_with_padding_bits() -> dict[str, Any]:
    body = vector()
    body["salt"] = flip_padding_bits(body["salt"])
    return body


def _salt_url_safe() -> dict[str, Any]:
    body = build(salt=b"\xfb\xff" * 16)
    assert "+" in body["salt"] and "/" in body["salt"]
    verify(body)  # the same salt in the standard alphabet is fine
    body["salt"] = body["salt"].replace("+", "-").replace("/", "_")
    return body


def _salt_with_newline() -> dict[str, Any]:
    body = vector()
    body["salt"] = body["salt"][:20] + "\n" + body["salt"][20:]
    return body


def _salt_with_extra_padding() -> dict[str, Any]:
    body = vector()
    body["salt"] = body["salt"] + "===="
    return body


@pytest.mark.parametrize(
    "make",
    [
        _salt_without_padding,
        _salt_with_padding_bits,
        _salt_url_safe,
        _salt_with_newline,
        _salt_with_extra_padding,
    ],
    ids=[
        "missing-padding",
        "non-zero-padding-bits",
        "url-safe-alphabet",
        "newline",
        "extra-padding",
    ],
)
def test_salt_that_is_not_canonical_base64_is_refused(make: Any) -> None:
    unverified(make(), "salt is not canonical base64")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_salt_of_the_wrong_length_is_refused(size: int) -> None:
    """Digests and signature are made with this very salt: only its length is wrong."""
    unverified(build(salt=bytes(range(size))), "salt must decode to 32 bytes")


def test_signature_by_another_key_is_refused() -> None:
    body = build(key=OTHER_KEY)
    assert body["envelope"]["key"] != ENVELOPE["key"]
    unverified(body, "signature does not verify")
    unverified(resign(vector(), OTHER_KEY), "signature does not verify")


@pytest.mark.parametrize("bit", [0, 7, 255, 256, 500, 511])
def test_signature_with_a_flipped_bit_is_refused(bit: int) -> None:
    body = vector()
    signature = bytearray(crypto.b64decode_strict(body["signature"]))
    signature[bit // 8] ^= 1 << (bit % 8)
    body["signature"] = crypto.b64(bytes(signature))
    unverified(body, "signature does not verify")


def test_signature_over_the_envelope_of_another_event_is_refused() -> None:
    body = vector()
    body["signature"] = build(event_id=str(uuid.uuid4()))["signature"]
    unverified(body, "signature does not verify")


@pytest.mark.parametrize(
    "signature", ["", "AAAA", crypto.b64(bytes(63)), crypto.b64(bytes(65))], ids=repr
)
def test_signature_of_the_wrong_length_is_refused(signature: str) -> None:
    body = vector()
    body["signature"] = signature
    unverified(body, "signature must decode to 64 bytes")


def test_signature_that_is_not_canonical_base64_is_refused() -> None:
    body = vector()
    body["signature"] = flip_padding_bits(body["signature"])
    unverified(body, "signature is not canonical base64")


@pytest.mark.parametrize(
    "change",
    [{"notice_version": "2026-2"}, {"interpreter": False}, {"extra": MARKER}],
    ids=["value", "boolean", "member-added"],
)
def test_attrs_changed_after_signing_are_refused(change: dict[str, Any]) -> None:
    body = vector()
    body["attrs"].update(change)
    unverified(body, "attrs do not match envelope.attrs_digest")


def test_attrs_replaced_by_an_empty_object_after_signing_are_refused() -> None:
    body = vector()
    body["attrs"] = {}
    unverified(body, "attrs do not match envelope.attrs_digest")


@pytest.mark.parametrize("category", ["contact", "location", "notes"])
def test_payload_category_added_after_signing_is_refused(category: str) -> None:
    body = vector()
    body["payload"][category] = {"note": MARKER}
    unverified(body, f"payload.{category} does not match its digest")


def test_payload_category_added_as_null_after_signing_is_accepted() -> None:
    """An absent category digests null, so an explicit null is the same content."""
    body = vector()
    body["payload"]["contact"] = None
    verify(body)


@pytest.mark.parametrize("category", ["identity", "health"])
def test_payload_category_removed_after_signing_is_refused(category: str) -> None:
    """The envelope signed the digest of the category's value; null no longer matches it."""
    body = vector()
    del body["payload"][category]
    unverified(body, f"payload.{category} does not match its digest")


def test_payload_value_changed_after_signing_is_refused() -> None:
    body = vector()
    body["payload"]["identity"]["aliases"].append(MARKER)
    unverified(body, "payload.identity does not match its digest")


def test_salt_changed_after_signing_is_refused() -> None:
    body = vector()
    body["salt"] = crypto.b64(bytes(32))
    unverified(body, "attrs do not match")


@pytest.mark.parametrize(
    "where", ["attrs_digest", "payload_digests.notes", "payload_digests.identity"]
)
def test_digest_that_is_not_canonical_base64_is_refused(where: str) -> None:
    body = vector()
    env = body["envelope"]
    if where == "attrs_digest":
        env["attrs_digest"] = flip_padding_bits(env["attrs_digest"])
    else:
        category = where.split(".")[1]
        env["payload_digests"][category] = flip_padding_bits(env["payload_digests"][category])
    unverified(resign(body), f"envelope.{where} is not canonical base64")


@pytest.mark.parametrize("where", ["attrs_digest", "payload_digests.notes"])
def test_digest_without_padding_is_refused(where: str) -> None:
    body = vector()
    env = body["envelope"]
    if where == "attrs_digest":
        env["attrs_digest"] = env["attrs_digest"].rstrip("=")
    else:
        env["payload_digests"]["notes"] = env["payload_digests"]["notes"].rstrip("=")
    unverified(resign(body), f"envelope.{where} is not canonical base64")


@pytest.mark.parametrize("size", [31, 33, 64])
def test_digest_of_the_wrong_length_is_refused(size: int) -> None:
    body = vector()
    body["envelope"]["payload_digests"]["notes"] = crypto.b64(bytes(size))
    unverified(resign(body), "envelope.payload_digests.notes must decode to 32 bytes")


def test_digests_swapped_between_categories_are_refused() -> None:
    """Each category's digest uses its own derived salt: equal values still do not match."""
    payload = {"identity": {"x": 1}, "contact": {"x": 1}}
    body = build(payload=payload)
    digests = body["envelope"]["payload_digests"]
    assert digests["identity"] != digests["contact"]
    digests["identity"], digests["contact"] = digests["contact"], digests["identity"]
    unverified(resign(body), "payload.identity does not match its digest")


# --- 422: validate_content: consent.granted -------------------------------------------------------


@pytest.mark.parametrize("fact", list(ENVELOPE["facts"]))
def test_consent_with_a_missing_fact_is_invalid(fact: str) -> None:
    facts = consent_facts()
    del facts[fact]
    invalid(f"invalid facts: facts.{fact}: Field required", facts=facts)


def test_consent_with_an_unknown_fact_is_invalid() -> None:
    invalid(
        "invalid facts: facts: has a member that is not in the schema",
        facts=consent_facts(note=MARKER),
    )


@pytest.mark.parametrize("purposes", [MARKER, "referral", {"referral": True}, None, 1])
def test_consent_with_purposes_that_are_not_a_list_is_invalid(purposes: Any) -> None:
    invalid("facts.purposes", facts=consent_facts(purposes=purposes))


@pytest.mark.parametrize("member", ["purposes", "recipients", "categories"])
def test_consent_with_an_empty_list_is_invalid(member: str) -> None:
    invalid(
        f"facts.{member}: List should have at least 1 item", facts=consent_facts(**{member: []})
    )


@pytest.mark.parametrize(
    "member,values",
    [
        ("categories", ["identity", "identity"]),
        ("purposes", ["referral", "referral"]),
        ("recipients", ["clinica-salud", "clinica-salud"]),
    ],
)
def test_consent_with_a_duplicated_list_member_is_invalid(member: str, values: list[str]) -> None:
    invalid(
        f"facts.{member}: Value error, list members must not repeat",
        facts=consent_facts(**{member: values}),
    )


@pytest.mark.parametrize("purpose", [MARKER, "Referral", "research", ""])
def test_consent_with_an_unknown_purpose_is_invalid(purpose: str) -> None:
    invalid("facts.purposes.1", facts=consent_facts(purposes=["referral", purpose]))


@pytest.mark.parametrize("category", [MARKER, "attrs", "Identity"])
def test_consent_with_an_unknown_category_is_invalid(category: str) -> None:
    invalid("facts.categories.0", facts=consent_facts(categories=[category]))


@pytest.mark.parametrize("recipient", [f"Clinica-{MARKER}", "", "a" * 64, "clinica salud"])
def test_consent_with_a_malformed_recipient_is_invalid(recipient: str) -> None:
    invalid("facts.recipients.0", facts=consent_facts(recipients=[recipient]))


_ECHOED_TIME = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:95/109 strptime's ValueError ('time data ... does not match format') "
        "repeats the submitted value in the 422 message via _describe"
    ),
)


@pytest.mark.parametrize(
    "expires_at",
    [
        MARKER,
        "2027-11-29",
        "2027-11-29T10:15:00+00:00",
        "2027-11-29T10:15:00.1Z",
        "2027-02-30T10:15:00Z",
        1827138900,
        True,
        {},
    ],
    ids=repr,
)
def test_consent_with_expires_at_not_a_timestamp_is_invalid(expires_at: Any) -> None:
    invalid("facts.expires_at", facts=consent_facts(expires_at=expires_at))


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param("2027-11-29T25:15:00Z", marks=_ECHOED_TIME),
        pytest.param("2027-11-29T10:61:00Z", marks=_ECHOED_TIME),
    ],
)
def test_consent_with_an_impossible_time_does_not_echo_it(expires_at: str) -> None:
    sub = verify(build(facts=consent_facts(expires_at=expires_at)))
    with pytest.raises(Invalid, match="facts.expires_at") as info:
        envelope.validate_content(sub)
    assert expires_at not in str(info.value)


@pytest.mark.parametrize(
    "expires_at",
    [pytest.param("\uff12\uff10\uff12\uff17-11-29T10:15:00Z", marks=_FULLWIDTH_YEAR)],
    ids=["fullwidth-year"],
)
def test_consent_with_non_ascii_digits_in_expires_at_is_invalid(expires_at: str) -> None:
    invalid("facts.expires_at", facts=consent_facts(expires_at=expires_at))


def test_consent_with_a_timestamp_expiry_is_valid() -> None:
    valid(facts=consent_facts(expires_at="2027-11-29T10:15:00Z"))


@pytest.mark.parametrize("child_assent", [MARKER, "yes", "true", 1, 0, [], {}])
def test_consent_with_child_assent_not_a_boolean_is_invalid(child_assent: Any) -> None:
    invalid("facts.child_assent", facts=consent_facts(child_assent=child_assent))


@pytest.mark.parametrize("child_assent", [True, False, None])
def test_consent_with_child_assent_boolean_or_null_is_valid(child_assent: Any) -> None:
    valid(facts=consent_facts(child_assent=child_assent))


@pytest.mark.parametrize("assent_exempt", [None, "false", 0])
def test_consent_with_assent_exempt_not_a_boolean_is_invalid(assent_exempt: Any) -> None:
    invalid("facts.assent_exempt", facts=consent_facts(assent_exempt=assent_exempt))


@pytest.mark.parametrize("given_by", [MARKER, "Survivor", "parent", None])
def test_consent_given_by_an_unknown_party_is_invalid(given_by: Any) -> None:
    invalid("facts.given_by", facts=consent_facts(given_by=given_by))


_NEWLINE_CONSENT_ID = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:67/104 _check_uuid4 uses the same `$`-terminated _UUID4: a consent_id with "
        "a trailing newline passes the facts schema"
    ),
)


@pytest.mark.parametrize(
    "consent_id",
    [
        MARKER,
        "C1E2D3F4-0000-4000-8000-000000000001",
        "c1e2d3f4000040008000000000000001",
        "c1e2d3f4-0000-1000-8000-000000000001",
        None,
        pytest.param("c1e2d3f4-0000-4000-8000-000000000001\n", marks=_NEWLINE_CONSENT_ID),
    ],
    ids=["marker", "upper", "unhyphenated", "v1", "null", "newline"],
)
def test_consent_with_a_malformed_consent_id_is_invalid(consent_id: Any) -> None:
    invalid("facts.consent_id", facts=consent_facts(consent_id=consent_id))


@pytest.mark.parametrize("member", ["language", "interpreter", "notice_version"])
def test_consent_with_a_missing_attr_is_invalid(member: str) -> None:
    attrs = copy.deepcopy(V["attrs"])
    del attrs[member]
    invalid(f"invalid attrs: attrs.{member}: Field required", attrs=attrs)


def test_attrs_with_an_unknown_member_are_invalid() -> None:
    invalid(
        "invalid attrs: attrs: has a member that is not in the schema",
        attrs={**V["attrs"], "note": MARKER},
    )


_ECHOED_NAME = _fixed_bug(
    strict=True,
    reason=(
        "envelope.py:534 _describe puts the error location into the message, and for an unknown "
        "member the location is the submitted member name: it is echoed (parse_submission "
        "deliberately does not echo unknown member names)"
    ),
)


@pytest.mark.parametrize(
    "where", [pytest.param("attrs", marks=_ECHOED_NAME), pytest.param("facts", marks=_ECHOED_NAME)]
)
def test_unknown_member_name_is_not_echoed(where: str) -> None:
    if where == "attrs":
        body = build(attrs={**V["attrs"], f"Ana Ejemplo {MARKER}": True})
    else:
        body = build(facts=consent_facts(**{f"Ana Ejemplo {MARKER}": True}))
    with pytest.raises(Invalid, match="has a member that is not in the schema") as info:
        envelope.validate_content(verify(body))
    assert MARKER not in str(info.value)


@pytest.mark.parametrize(
    "language",
    [
        "not a tag!",
        f"not a tag! {MARKER}",
        "",
        "e",
        "es_ES",
        "es-",
        "-es",
        "abcdefghi",
        "es-ES-abcdefghi",
        1,
        None,
    ],
)
def test_consent_with_a_language_that_is_not_a_bcp47_tag_is_invalid(language: Any) -> None:
    invalid("attrs.language", attrs={**V["attrs"], "language": language})


@pytest.mark.parametrize("language", ["es", "es-419", "zh-Hant-TW", "qu", "sgn-ES", "ht"])
def test_consent_with_a_bcp47_language_is_valid(language: str) -> None:
    valid(attrs={**V["attrs"], "language": language})


@pytest.mark.parametrize("interpreter", ["true", 1, None])
def test_consent_with_interpreter_not_a_boolean_is_invalid(interpreter: Any) -> None:
    invalid("attrs.interpreter", attrs={**V["attrs"], "interpreter": interpreter})


@pytest.mark.parametrize("notice_version", ["", MARKER * 20, None, 1])
def test_consent_with_a_bad_notice_version_is_invalid(notice_version: Any) -> None:
    invalid("attrs.notice_version", attrs={**V["attrs"], "notice_version": notice_version})


# --- 422: validate_content: other event types -----------------------------------------------------

OPENED_ATTRS = {
    "age_band": "adult",
    "gender": "female",
    "exploitation": ["labour"],
    "identified_at": "2026-11-01",
}


def opened(minor: Any, **attrs: Any) -> dict[str, Any]:
    return {
        "type": "case.opened",
        "facts": {"minor": minor},
        "attrs": {**OPENED_ATTRS, **attrs},
        "payload": {},
    }


def test_case_opened_as_minor_with_age_band_adult_is_invalid() -> None:
    invalid(
        "facts.minor must be true exactly when attrs.age_band is not 'adult'",
        **opened(True, age_band="adult"),
    )


@pytest.mark.parametrize("band", ["unknown", "0-5", "6-11", "12-14", "15-17"])
def test_case_opened_as_not_minor_with_a_child_or_unknown_age_band_is_invalid(band: str) -> None:
    """Presumption of minority: an unknown age is a minor."""
    invalid("facts.minor must be true exactly", **opened(False, age_band=band))


@pytest.mark.parametrize(
    "minor,band", [(True, "unknown"), (True, "0-5"), (True, "15-17"), (False, "adult")]
)
def test_case_opened_with_minor_matching_the_age_band_is_valid(minor: bool, band: str) -> None:
    valid(**opened(minor, age_band=band))


def test_age_assessed_as_minor_with_age_band_adult_is_invalid() -> None:
    invalid(
        "facts.minor must be true exactly",
        type="age.assessed",
        facts={"minor": True},
        attrs={"age_band": "adult", "method": "document"},
        payload={},
    )


@pytest.mark.parametrize("minor", ["true", 1, None])
def test_case_opened_with_minor_not_a_boolean_is_invalid(minor: Any) -> None:
    invalid("facts.minor", **opened(minor))


@pytest.mark.parametrize(
    "member,value",
    [
        ("age_band", MARKER),
        ("age_band", "18+"),
        ("gender", MARKER),
        ("exploitation", []),
        ("exploitation", ["labour", "labour"]),
        ("exploitation", [MARKER]),
        ("exploitation", "labour"),
        ("identified_at", "2026-02-30"),
        ("identified_at", "2026-11-01T00:00:00Z"),
        ("identified_at", MARKER),
        ("identified_at", "20261101"),
    ],
)
def test_case_opened_with_a_bad_attr_is_invalid(member: str, value: Any) -> None:
    invalid(f"attrs.{member}", **opened(False, **{member: value}))


def feedback(rating: Any, referral_id: Any = None) -> dict[str, Any]:
    return {
        "type": "feedback.recorded",
        "facts": {"referral_id": referral_id},
        "attrs": {"rating": rating},
        "payload": {},
    }


@pytest.mark.parametrize("rating", [0, 6, -1, True, False, "3", MARKER, None], ids=repr)
def test_feedback_with_a_rating_outside_1_to_5_or_not_an_integer_is_invalid(rating: Any) -> None:
    invalid("attrs.rating", **feedback(rating))


@pytest.mark.parametrize("rating", [3.0, 2.5], ids=repr)
def test_feedback_with_a_fractional_rating_is_refused_before_its_schema(rating: float) -> None:
    """The client will not sign it; sent anyway, step 2 refuses it (400, not 422)."""
    with pytest.raises(ValueError, match="send fractions as strings"):
        build(**feedback(rating))
    raw = encode(build(**feedback(3))).replace(b'"rating": 3', f'"rating": {rating}'.encode())
    bad_request(raw, "send fractions as strings")


@pytest.mark.parametrize("rating", [1, 3, 5])
def test_feedback_with_an_integer_rating_from_1_to_5_is_valid(rating: int) -> None:
    valid(**feedback(rating))
    valid(**feedback(rating, str(uuid.uuid4())))


def test_feedback_without_the_nullable_referral_id_is_invalid() -> None:
    invalid(
        "facts.referral_id: Field required",
        type="feedback.recorded",
        facts={},
        attrs={"rating": 3},
        payload={},
    )


REFERRAL_ID = "d4c3b2a1-0000-4000-8000-000000000002"


@pytest.mark.parametrize("event_type", ["referral.accepted", "referral.completed"])
@pytest.mark.parametrize("reason", ["other", "no_capacity", MARKER, "", False])
def test_referral_accepted_or_completed_with_a_reason_is_invalid(
    event_type: str, reason: Any
) -> None:
    invalid(
        "attrs.reason",
        type=event_type,
        facts={"referral_id": REFERRAL_ID},
        attrs={"reason": reason},
        payload={},
    )


@pytest.mark.parametrize("event_type", ["referral.accepted", "referral.completed"])
def test_referral_accepted_or_completed_with_a_null_reason_is_valid(event_type: str) -> None:
    valid(type=event_type, facts={"referral_id": REFERRAL_ID}, attrs={"reason": None}, payload={})


def test_referral_accepted_without_the_null_reason_is_invalid() -> None:
    invalid(
        "attrs.reason: Field required",
        type="referral.accepted",
        facts={"referral_id": REFERRAL_ID},
        attrs={},
        payload={},
    )


@pytest.mark.parametrize("reason", [None, MARKER, "survivor_request"])
def test_referral_declined_with_a_reason_outside_its_list_is_invalid(reason: Any) -> None:
    invalid(
        "attrs.reason",
        type="referral.declined",
        facts={"referral_id": REFERRAL_ID},
        attrs={"reason": reason},
        payload={},
    )


@pytest.mark.parametrize(
    "event_type,facts,attrs",
    [
        ("guardian.appointed", {"role": "guardian"}, {"note": MARKER}),
        (
            "data.shared",
            {
                "share_id": str(uuid.uuid4()),
                "recipient": "clinica-salud",
                "consent_id": str(uuid.uuid4()),
                "purpose": "data_sharing",
                "categories": ["identity"],
            },
            {"x": 1},
        ),
        ("case.erased", {"request_event_id": str(uuid.uuid4())}, {"reason": "survivor_request"}),
        ("case.closed", {}, {"reason": "other", "note": MARKER}),
    ],
    ids=["guardian.appointed", "data.shared", "case.erased", "case.closed"],
)
def test_attrs_with_an_unknown_member_for_other_types_are_invalid(
    event_type: str, facts: dict[str, Any], attrs: dict[str, Any]
) -> None:
    invalid(
        "has a member that is not in the schema",
        type=event_type,
        facts=facts,
        attrs=attrs,
        payload={},
    )


def test_case_closed_with_a_fact_is_invalid() -> None:
    invalid(
        "facts: has a member that is not in the schema",
        type="case.closed",
        facts={"minor": True},
        attrs={"reason": "other"},
        payload={},
    )
