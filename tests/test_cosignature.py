"""cosignature/v1 against the tests' own implementation of the spec (tests/cosignature_spec.py):
the signed message bytes, the key id and the timestamp agree byte for byte, each side
verifies the other's, and every malformed or forged line is refused."""

from __future__ import annotations

import base64

import pytest

from ledger.contract import crypto
from ledger.contract.notes import MalformedNote, sign_note, split_note
from ledger.log.checkpoint import Checkpoint, MalformedCheckpoint
from ledger.log.cosignature import (
    CosignatureError,
    cosign,
    cosignatures,
    signed_message,
    verify_cosignature,
)
from tests import cosignature_spec as spec

# RFC 8032 section 7.1, TEST 1: the secret key, its public key, and the signature of "".
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39"
    "701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
ORIGIN = "ledger.example/log"
WITNESS = "witness.example/w1"
ROOT = bytes(range(32))
TIME = 1_790_000_000


def witness_key() -> crypto.SigningKey:
    return crypto.signing_key_from_seed(WITNESS, RFC_SECRET, crypto.COSIGNATURE_TYPE)


def signed_checkpoint(size: int = 7, extension: str = "") -> tuple[str, str]:
    """A checkpoint's text and the note signed by a fresh log key."""
    body = Checkpoint(ORIGIN, size, ROOT).body() + extension
    return body, sign_note(body, crypto.generate_signing_key(ORIGIN))


def test_the_tests_own_ed25519_reproduces_rfc_8032_test_1() -> None:
    assert spec.public_key(RFC_SECRET) == RFC_PUBLIC
    assert spec.ed25519_sign(RFC_SECRET, b"") == RFC_SIG
    assert spec.ed25519_verify(RFC_PUBLIC, b"", RFC_SIG)
    assert not spec.ed25519_verify(RFC_PUBLIC, b"x", RFC_SIG)


def test_the_signed_message_is_the_spec_example_byte_for_byte() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    expected = (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert signed_message(body, 1679315147) == expected == spec.message(body, 1679315147)


def test_key_id_and_verifier_key_line_are_the_specs() -> None:
    vkey = witness_key().verify_key
    assert vkey.raw == RFC_PUBLIC
    assert vkey.key_hash == spec.key_id(WITNESS, RFC_PUBLIC)
    assert vkey.line() == spec.vkey(WITNESS, RFC_PUBLIC)
    assert crypto.parse_verify_key(vkey.line(), crypto.COSIGNATURE_TYPE) == vkey


def test_a_cosignature_line_is_the_spec_implementations_byte_for_byte() -> None:
    body, _ = signed_checkpoint()
    line = cosign(body, witness_key(), TIME)
    assert line == spec.cosignature_line(WITNESS, RFC_SECRET, body, TIME)
    assert spec.verify_line(line, WITNESS, RFC_PUBLIC, body) == TIME
    read = spec.read_line(line)
    assert read.timestamp == TIME and read.key_id == witness_key().verify_key.key_hash


def test_a_cosignature_made_by_the_spec_implementation_verifies_here() -> None:
    body, note = signed_checkpoint(size=20852163)
    line = spec.cosignature_line(WITNESS, RFC_SECRET, body, TIME + 5)
    _, found = cosignatures(note + line, [witness_key().verify_key])
    assert found[witness_key().verify_key].timestamp == TIME + 5
    assert found[witness_key().verify_key].line == line[:-1]


def test_extension_lines_are_cosigned_too() -> None:
    body, note = signed_checkpoint(extension="an extension\n")
    line = cosign(body, witness_key(), TIME)
    assert spec.verify_line(line, WITNESS, RFC_PUBLIC, body) == TIME
    without = Checkpoint(ORIGIN, 7, ROOT).body()
    with pytest.raises(AssertionError):
        spec.verify_line(line, WITNESS, RFC_PUBLIC, without)


def test_a_cosigner_key_is_not_a_note_key_and_the_other_way_round() -> None:
    note_key = crypto.signing_key_from_seed(WITNESS, RFC_SECRET)
    cosigner = witness_key()
    assert note_key.verify_key.key_hash != cosigner.verify_key.key_hash
    with pytest.raises(crypto.BadKeyLine):
        crypto.parse_verify_key(cosigner.verify_key.line())
    with pytest.raises(crypto.BadKeyLine):
        crypto.parse_verify_key(note_key.verify_key.line(), crypto.COSIGNATURE_TYPE)
    assert crypto.parse_signing_key(cosigner.line(), crypto.COSIGNATURE_TYPE) == cosigner
    with pytest.raises(crypto.BadKeyLine):
        crypto.parse_signing_key(cosigner.line())
    body, _ = signed_checkpoint()
    with pytest.raises(CosignatureError):
        cosign(body, note_key, TIME)
    with pytest.raises(MalformedNote):
        sign_note(body, cosigner)


@pytest.mark.parametrize("timestamp", [0, -1, 2**63])
def test_a_timestamp_outside_1_to_2_63_minus_1_is_never_made(timestamp: int) -> None:
    body, _ = signed_checkpoint()
    with pytest.raises(CosignatureError):
        cosign(body, witness_key(), timestamp)


def test_only_checkpoints_are_cosigned() -> None:
    with pytest.raises(MalformedCheckpoint):
        cosign("not\na checkpoint\n", witness_key(), TIME)


def _blob(line: str) -> bytes:
    return base64.b64decode(line.split(" ")[2])


def _line(blob: bytes, name: str = WITNESS) -> str:
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def _forgeries(body: str) -> dict[str, str]:
    good = _blob(cosign(body, witness_key(), TIME))
    key_id, stamp, sig = good[:4], good[4:12], good[12:]
    later = (TIME + 1).to_bytes(8, "big")
    flipped = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
    return {
        "timestamp-changed": _line(key_id + later + sig),
        "signature-bit-flipped": _line(key_id + stamp + flipped),
        "zero-timestamp": _line(
            key_id + bytes(8) + spec.ed25519_sign(RFC_SECRET, spec.message(body, 0))
        ),  # fmt: skip
        "timestamp-over-2^63-1": _line(key_id + (2**63).to_bytes(8, "big") + sig),
        "no-timestamp": _line(key_id + sig),
        "truncated": _line(key_id + stamp + sig[:-1]),
        "a-plain-note-signature": _line(key_id + spec.ed25519_sign(RFC_SECRET, body.encode())),
    }


@pytest.mark.parametrize("forgery", sorted(_forgeries(signed_checkpoint()[0])))
def test_a_forged_or_malformed_line_by_the_witness_key_rejects_the_note(forgery: str) -> None:
    body, note = signed_checkpoint()
    line = _forgeries(body)[forgery]
    with pytest.raises(CosignatureError):
        cosignatures(note + line, [witness_key().verify_key])


def test_a_cosignature_of_another_checkpoint_does_not_verify() -> None:
    body, note = signed_checkpoint(size=7)
    other = Checkpoint(ORIGIN, 8, ROOT).body()
    with pytest.raises(CosignatureError):
        cosignatures(note + cosign(other, witness_key(), TIME), [witness_key().verify_key])


def test_lines_by_unknown_keys_are_ignored_even_sharing_a_name_or_an_id() -> None:
    body, note = signed_checkpoint()
    mine = witness_key()
    stranger = crypto.generate_signing_key(WITNESS, crypto.COSIGNATURE_TYPE)  # same name
    same_id = _line(_blob(cosign(body, mine, TIME)), name="someone.else/w")  # same key id
    lines = cosign(body, stranger, TIME) + same_id
    _, found = cosignatures(note + lines, [mine.verify_key])
    assert found == {}
    _, found = cosignatures(note + lines + cosign(body, mine, TIME), [mine.verify_key])
    assert list(found) == [mine.verify_key]


def test_of_two_cosignatures_by_one_key_the_newest_is_kept() -> None:
    body, note = signed_checkpoint()
    key = witness_key()
    lines = cosign(body, key, TIME + 60) + cosign(body, key, TIME)
    _, found = cosignatures(note + lines, [key.verify_key])
    assert found[key.verify_key].timestamp == TIME + 60


def test_verify_cosignature_refuses_a_line_of_another_key() -> None:
    body, note = signed_checkpoint()
    other = crypto.generate_signing_key("witness.example/w2", crypto.COSIGNATURE_TYPE)
    _, lines = split_note(note + cosign(body, other, TIME))
    with pytest.raises(CosignatureError):
        verify_cosignature(body, lines[-1], witness_key().verify_key)
