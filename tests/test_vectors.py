"""Known-answer vector shared/vectors/event/v1.json, reproduced byte for byte.

Every artefact of the event contract (ARCHITECTURE.md sections 3 and 4) is recomputed with the
project's own functions from the vector's inputs (seed, salt, attrs, payload, envelope fields)
and compared with the vector's bytes. One test per artefact, named after it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.contract import canonical, crypto, envelope, vocabulary
from ledger.log.merkle import leaf_hash
from tests.conftest import VECTORS

VECTOR_PATH = VECTORS / "event" / "v1.json"
V: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))

KEY = crypto.signing_key_from_seed(V["agency_id"], bytes.fromhex(V["agency_signing_key_seed_hex"]))
SALT = crypto.b64decode_strict(V["salt_b64"])
ENVELOPE = V["envelope"]
ORIGIN = ENVELOPE["log"]
SIGNED_AT = vocabulary.parse_timestamp(ENVELOPE["signed_at"])
FRESHNESS_S = 300
ENTRY = V["example_entry"]


def b64decode(text: str) -> bytes:
    """The vector's base64 is canonical (RFC 4648 §4, padded): decode it strictly."""
    return crypto.b64decode_strict(text)


def test_vector_covers_every_category_and_the_attrs() -> None:
    assert tuple(V["payload_jcs_by_category"]) == vocabulary.CATEGORIES
    assert tuple(ENVELOPE["payload_digests"]) == vocabulary.CATEGORIES
    assert tuple(V["derived_salts_b64"]) == ("attrs", *vocabulary.CATEGORIES)
    assert len(SALT) == envelope.SALT_BYTES


def test_agency_verify_key_line() -> None:
    line = crypto.signing_key_from_seed(
        V["agency_id"], bytes.fromhex(V["agency_signing_key_seed_hex"])
    ).verify_key.line()
    assert line == V["agency_verify_key_line"]
    assert crypto.parse_verify_key(line) == KEY.verify_key


def test_envelope_key_id() -> None:
    assert KEY.verify_key.key_id == ENVELOPE["key"]
    assert ENVELOPE["agency"] == V["agency_id"]


@pytest.mark.parametrize("name", list(V["derived_salts_b64"]))
def test_derived_salts(name: str) -> None:
    assert crypto.b64(canonical.derived_salt(SALT, name)) == V["derived_salts_b64"][name]


def test_attrs_jcs() -> None:
    assert canonical.jcs(V["attrs"]) == V["attrs_jcs"].encode("utf-8")


@pytest.mark.parametrize("category", vocabulary.CATEGORIES)
def test_payload_jcs_by_category(category: str) -> None:
    expected = V["payload_jcs_by_category"][category].encode("utf-8")
    assert canonical.jcs(V["payload"].get(category)) == expected


def test_attrs_digest() -> None:
    assert crypto.b64(canonical.digest(SALT, "attrs", V["attrs"])) == ENVELOPE["attrs_digest"]


@pytest.mark.parametrize("category", vocabulary.CATEGORIES)
def test_payload_digests(category: str) -> None:
    calculated = canonical.digest(SALT, category, V["payload"].get(category))
    assert crypto.b64(calculated) == ENVELOPE["payload_digests"][category]


def test_envelope_jcs() -> None:
    assert canonical.jcs(ENVELOPE) == V["envelope_jcs"].encode("utf-8")


def test_signing_input() -> None:
    assert canonical.signing_input(ENVELOPE) == b64decode(V["signing_input_b64"])
    assert canonical.signing_input(ENVELOPE) == b"ledger-event-v1\n" + V["envelope_jcs"].encode()


def test_signature() -> None:
    signature = crypto.sign(KEY, canonical.signing_input(ENVELOPE))
    assert crypto.b64(signature) == V["signature_b64"]
    crypto.verify(KEY.verify_key, b64decode(V["signing_input_b64"]), signature)


def test_submission() -> None:
    built = envelope.build_submission(
        KEY,
        log=ORIGIN,
        case_id=ENVELOPE["case_id"],
        type=ENVELOPE["type"],
        facts=ENVELOPE["facts"],
        attrs=V["attrs"],
        payload=V["payload"],
        event_id=ENVELOPE["event_id"],
        signed_at=SIGNED_AT,
        salt=SALT,
    )
    assert canonical.jcs(built) == canonical.jcs(V["submission"])
    assert built["envelope"] == ENVELOPE
    assert built["signature"] == V["signature_b64"]
    assert built["salt"] == V["salt_b64"]


def test_submission_is_accepted() -> None:
    raw = json.dumps(V["submission"], ensure_ascii=False).encode("utf-8")
    sub = envelope.parse_submission(raw)
    envelope.verify_integrity(
        sub, origin=ORIGIN, verify_key=KEY.verify_key, now=SIGNED_AT, freshness_s=FRESHNESS_S
    )
    envelope.validate_content(sub)
    assert sub.body == V["submission"]
    assert sub.fingerprint == crypto.sha256(canonical.jcs(V["submission"]))


def test_example_entry_bytes() -> None:
    assert canonical.jcs(ENTRY["entry"]) == b64decode(ENTRY["entry_bytes_b64"])
    assert ENTRY["entry"]["envelope"] == ENVELOPE
    assert ENTRY["entry"]["signature"] == V["signature_b64"]


def test_example_entry_leaf_hash() -> None:
    assert crypto.b64(leaf_hash(canonical.jcs(ENTRY["entry"]))) == ENTRY["leaf_hash_b64"]


def test_example_entry_sealed_digest() -> None:
    sealed = b64decode(ENTRY["sealed_ciphertext_b64"])
    assert crypto.b64(crypto.sha256(sealed)) == ENTRY["entry"]["sealed_digest"]


def test_the_jcs_fast_path_agrees_with_rfc8785_on_random_values() -> None:
    import random

    import rfc8785

    from ledger.contract.canonical import jcs

    rng = random.Random(5)
    alphabet = [
        "a",
        "Z",
        "0",
        " ",
        '"',
        "\\",
        "\n",
        "\t",
        "\x01",
        "\x1f",
        "\x7f",
        "é",
        "ñ",
        "—",
        "\u2028",
        "€",
        "\U0001f600",
        "字",
    ]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice(
                [
                    None,
                    True,
                    False,
                    rng.randrange(-(2**53) + 1, 2**53),
                    rng.randrange(-5, 5),
                    text(),
                    1.5,
                    -0.0,
                    1e21,
                ]
            )
        if roll < 0.65:
            return [value(depth + 1) for _ in range(rng.randrange(0, 4))]
        return {text(): value(depth + 1) for _ in range(rng.randrange(0, 4))}

    for _ in range(3000):
        v = value(0)
        try:
            expected = rfc8785.dumps(v)
        except Exception:
            continue
        assert jcs(v) == expected, v
