"""How one event's attrs, payload and salt are stored: sealed with the case's data key.

Every one of the ten payload categories is sealed, absent ones as `null`, and every plaintext
is padded to a power-of-two size (at least 64 bytes), so the stored ciphertext tells neither
which categories a case holds nor their exact sizes. Each box's associated data binds it to
its case, its event and its name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ledger.contract import crypto
from ledger.contract.vocabulary import CATEGORIES

_DOMAIN = b"ledger-seal-v1\n"
_MIN_PAD = 64


def _associated(case_id: str, event_id: str, name: str) -> bytes:
    return _DOMAIN + f"{case_id}\n{event_id}\n{name}".encode()


def pad(data: bytes) -> bytes:
    """Pad with spaces (JSON whitespace) to the next power of two, at least 64 bytes."""
    size = max(_MIN_PAD, 1 << max(0, len(data) - 1).bit_length())
    return data + b" " * (size - len(data))


def _json(value: Any) -> bytes:
    """Compact JSON for sealed plaintext (digests use JCS; the boxes need not)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def seal_record(
    key: bytes, case_id: str, event_id: str, canonical: Mapping[str, bytes], salt: str
) -> bytes:
    """The stored ciphertext of one event: `canonical` holds the JSON bytes of `attrs` and of
    every payload category (`Submission.canonical`, the bytes its digests were checked on)."""

    def box(name: str, plaintext: bytes) -> str:
        sealed = crypto.seal(key, pad(plaintext), _associated(case_id, event_id, name))
        return crypto.b64(sealed)

    boxes = {
        "attrs": box("attrs", canonical["attrs"]),
        "payload": {c: box(c, canonical[c]) for c in CATEGORIES},
        "salt": box("salt", _json(salt)),
    }
    return _json(boxes)


def unseal_items(
    key: bytes, case_id: str, record: dict[str, Any], names: Iterable[str]
) -> dict[str, Any]:
    """Unseal several boxes (`attrs`, `salt`, payload categories) of one stored record,
    decoding the record's stored ciphertext once."""
    boxes = json.loads(crypto.b64decode_strict(record["sealed"]))
    event_id = record["envelope"]["event_id"]
    out = {}
    for name in names:
        box = boxes["payload"][name] if name in CATEGORIES else boxes[name]
        ad = _associated(case_id, event_id, name)
        out[name] = json.loads(crypto.unseal(key, crypto.b64decode_strict(box), ad))
    return out


def unseal_item(key: bytes, case_id: str, record: dict[str, Any], name: str) -> Any:
    """Unseal `attrs`, `salt` or one payload category of a stored record."""
    return unseal_items(key, case_id, record, [name])[name]
