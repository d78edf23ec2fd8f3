"""Canonical JSON (JCS, RFC 8785: names in UTF-16 order) and the digests and signing input."""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import rfc8785

from ledger.contract.vocabulary import CATEGORIES

EVENT_DOMAIN = b"ledger-event-v1\n"
DIGEST_DOMAIN = b"ledger-digest-v1\n"
MAX_SAFE_INT = 2**53 - 1


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
            if -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
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
        return dumps(value).encode("utf-8")
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


def dumps(value: Any, *, sort_keys: bool = True, default: Any = None) -> str:
    """Compact JSON text, names sorted by code point, non-ASCII as itself (C, one pass; the
    encoder made once, not per call as `json.dumps` makes it)."""
    return _encoder(sort_keys, default).encode(value)


_ASTRAL_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")  # UTF-8 lead bytes beyond U+FFFF


def may_reorder(data: bytes) -> bool:
    """Whether RFC 8785's order of member names (by UTF-16 code units) can differ from the
    code-point order of `dumps` for this UTF-8 text: only when it holds a character beyond
    U+FFFF and one in U+E000..U+FFFF (lead bytes EE, EF). Five byte searches, no parsing."""
    return (b"\xee" in data or b"\xef" in data) and any(lead in data for lead in _ASTRAL_LEADS)


def _utf16_name(member: tuple[str, Any]) -> bytes:
    return member[0].encode("utf-16-be")


def _in_utf16_order(members: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(members) > 1:
        members.sort(key=_utf16_name)
    return dict(members)


def utf16_ordered(text: str) -> bytes:
    """RFC 8785 bytes from the sorted text `text` (`dumps` of a value step 2 accepted), its
    member names sorted again by UTF-16 code units, as RFC 8785 and `rfc8785` sort them: the
    rare path `may_reorder` asks for. Parsed once more, each object's members put in that
    order as it is made (a Python call per object, none per value), and written out in it."""
    with collector_paused():
        value = json.loads(text, object_pairs_hook=_in_utf16_order)
    return dumps(value, sort_keys=False).encode("utf-8")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
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


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of (a part of) a body that step 2 accepted: its strings are valid
    Unicode and its numbers integers within JCS's range, so `dumps` is canonical but for
    the order of names beyond U+FFFF, which `may_reorder` rules out or `utf16_ordered` mends."""
    text = dumps(value)
    data = text.encode("utf-8")
    return utf16_ordered(text) if may_reorder(data) else data


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
