"""Step 2's strict JSON: loads_strict, and every encoding rule checked in C on canonical text."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from ledger.contract.canonical import MAX_SAFE_INT, collector_paused, dumps
from ledger.errors import BadRequest

# --- parsing (step 2) ---------------------------------------------------------------------------
#
# Step 2 costs a small multiple of `json.loads` + `json.dumps` whatever a body holds: parsing
# and one canonical serialisation run in C, and every encoding rule is then checked on that
# canonical text with byte searches and regular expressions (also C), never value by value in
# Python. The canonical text is also what the fingerprint hashes. (A rare body costs a Python
# call per object: one with characters beyond U+FFFF and in U+E000..U+FFFF, whose names RFC
# 8785 may order otherwise: it is parsed once more in that order, `utf16_ordered`.)

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


def refuse_fraction(text: str) -> Any:
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


def loads(raw: bytes, parse_float: Any) -> tuple[Any, str]:
    """The parsed value and the decoded text; NaN, Infinity and invalid UTF-8 refused."""
    try:
        text = raw.decode("utf-8")
        with collector_paused():
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


def refuse_duplicates(source: str, canonical: str) -> None:
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
    value, text = loads(raw, _mark_fraction)
    try:
        canonical = dumps(value, sort_keys=False, default=_fraction_as_null)
    except RecursionError as exc:
        raise BadRequest("JSON is nested too deeply") from exc
    refuse_duplicates(text, canonical)
    return value


def canonical_text(body: Any) -> str:
    """`dumps` of a parsed body, its failures as refusals (a fraction, a caller's non-JSON)."""
    try:
        return dumps(body, default=_not_json)
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
_UNSAFE_16 = re.compile(f",(?:{_above(str(MAX_SAFE_INT))})".encode())
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


def check_text(text: str) -> bytes:
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
