"""C2SP signed notes and checkpoints, including known answers from the spec and the Go reference."""

from __future__ import annotations

import base64

import pytest

from ledger.contract.crypto import (
    generate_signing_key,
    parse_signing_key,
    parse_verify_key,
    signing_key_from_seed,
)
from ledger.contract.notes import MalformedNote, NoteError, UnverifiedNote, open_note, sign_note
from ledger.log.checkpoint import Checkpoint, MalformedCheckpoint, WrongOrigin, verify_checkpoint

ORIGIN = "ledger.example/log"
ROOT = bytes(range(32))

# golang.org/x/mod/sumdb/note (note_test.go, TestSign and TestOpen), used as data.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)

# c2sp.org/signed-note, "Verifier keys" example.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3m"
    "FXmRKuwHjG1Yu72IneyaQM=\n"
)

# c2sp.org/tlog-checkpoint example (its key is not published).
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def _signed_checkpoint(size: int = 7) -> tuple[str, Checkpoint]:
    key = generate_signing_key(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, size, ROOT)
    return sign_note(checkpoint.body(), key), checkpoint


# --- interoperability -------------------------------------------------------------------------


def test_go_reference_signature_is_reproduced_byte_for_byte() -> None:
    signer = parse_signing_key(GO_SKEY)
    assert signer.verify_key.line() == GO_VKEY
    assert sign_note(GO_TEXT, signer) == GO_TEXT + "\n" + GO_PETER_SIG


def test_go_reference_note_opens_and_unknown_signatures_are_ignored() -> None:
    note = GO_TEXT + "\n" + GO_PETER_SIG + GO_ENOCH_SIG
    assert open_note(note, parse_verify_key(GO_VKEY)) == GO_TEXT
    assert open_note(note, parse_verify_key(GO_ENOCH_VKEY)) == GO_TEXT


def test_signed_note_spec_example_verifies() -> None:
    assert open_note(SPEC_NOTE, parse_verify_key(SPEC_VKEY)) == "This is an example message.\n"


def test_checkpoint_spec_example_parses_but_needs_its_key() -> None:
    body = SPEC_CHECKPOINT.split("\n\n")[0] + "\n"
    checkpoint = Checkpoint.parse(body)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.body() == body
    impostor = generate_signing_key("example.com/behind-the-sofa").verify_key
    with pytest.raises(UnverifiedNote):
        verify_checkpoint(SPEC_CHECKPOINT, impostor)


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    note, checkpoint = _signed_checkpoint()
    key_line = note.rstrip("\n").rsplit("\n", 1)[1]
    assert checkpoint.body() == f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\n"
    assert note == checkpoint.body() + "\n" + key_line + "\n"
    assert key_line.startswith(f"\u2014 {ORIGIN} ")
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_verify_checkpoint_round_trip() -> None:
    key = generate_signing_key(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, 0, ROOT)
    note = sign_note(checkpoint.body(), key)
    assert verify_checkpoint(note, key.verify_key) == checkpoint
    assert verify_checkpoint(note, key.verify_key, origin=ORIGIN) == checkpoint


def test_extension_lines_are_accepted_and_dropped() -> None:
    body = Checkpoint(ORIGIN, 3, ROOT).body() + "ext one\next two\n"
    assert Checkpoint.parse(body) == Checkpoint(ORIGIN, 3, ROOT)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}", id="no-final-newline"),
        pytest.param(f"{ORIGIN}\n7\n", id="two-lines"),
        pytest.param(f"\n7\n{base64.b64encode(ROOT).decode()}\n", id="empty-origin"),
        pytest.param(f"{ORIGIN}\n07\n{base64.b64encode(ROOT).decode()}\n", id="leading-zero"),
        pytest.param(f"{ORIGIN}\n+7\n{base64.b64encode(ROOT).decode()}\n", id="plus-sign"),
        pytest.param(f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n", id="negative"),
        pytest.param(f"{ORIGIN}\n1_0\n{base64.b64encode(ROOT).decode()}\n", id="underscore"),
        pytest.param(f"{ORIGIN}\n\u0667\n{base64.b64encode(ROOT).decode()}\n", id="arabic-digit"),
        pytest.param(f"{ORIGIN}\n{2**64}\n{base64.b64encode(ROOT).decode()}\n", id="over-uint64"),
        pytest.param(f"{ORIGIN}\n7\n{base64.b64encode(ROOT[:31]).decode()}\n", id="short-root"),
        pytest.param(f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()[:-1]}\n", id="bad-base64"),
        pytest.param(
            f"{ORIGIN}\n7\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=\n", id="non-canonical-root"
        ),
        pytest.param(f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\n\next\n", id="empty-ext"),
        pytest.param(f"{ORIGIN}\r\n7\n{base64.b64encode(ROOT).decode()}\n", id="carriage-return"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [("", 1, ROOT), ("a\nb", 1, ROOT), (ORIGIN, -1, ROOT), (ORIGIN, 2**64, ROOT), (ORIGIN, 1, b"")],
)
def test_invalid_checkpoint_values_are_rejected(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(ValueError):
        Checkpoint(origin, size, root)


def test_checkpoint_from_another_log_is_rejected() -> None:
    other = generate_signing_key("other.example/log")
    note = sign_note(Checkpoint(ORIGIN, 7, ROOT).body(), other)
    with pytest.raises(WrongOrigin):
        verify_checkpoint(note, other.verify_key)
    note, _ = _signed_checkpoint()
    with pytest.raises(WrongOrigin):
        verify_checkpoint(note, parse_verify_key(GO_VKEY), origin=ORIGIN)


def test_signed_note_that_is_not_a_checkpoint_is_rejected() -> None:
    key = generate_signing_key(ORIGIN)
    with pytest.raises(MalformedCheckpoint):
        verify_checkpoint(sign_note(f"{ORIGIN}\nseven\n", key), key.verify_key)


# --- signature checks -------------------------------------------------------------------------


def test_note_signed_by_another_key_fails() -> None:
    note, _ = _signed_checkpoint()
    with pytest.raises(UnverifiedNote):
        verify_checkpoint(note, generate_signing_key(ORIGIN).verify_key)


def test_modified_body_fails() -> None:
    key = generate_signing_key(ORIGIN)
    note = sign_note(Checkpoint(ORIGIN, 7, ROOT).body(), key)
    with pytest.raises(UnverifiedNote):
        open_note(note.replace("\n7\n", "\n8\n", 1), key.verify_key)


def test_mismatched_key_hash_is_ignored_so_the_note_is_unverified() -> None:
    vk = parse_verify_key(GO_VKEY)
    blob = base64.b64decode(GO_PETER_SIG.split()[-1])
    other_hash = bytes([blob[0] ^ 1]) + blob[1:]
    sig_line = f"\u2014 PeterNeumann {base64.b64encode(other_hash).decode()}\n"
    with pytest.raises(UnverifiedNote):
        open_note(GO_TEXT + "\n" + sig_line, vk)


def test_other_key_name_is_ignored_so_the_note_is_unverified() -> None:
    note = GO_TEXT + "\n" + GO_PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(UnverifiedNote):
        open_note(note, parse_verify_key(GO_VKEY))


@pytest.mark.parametrize(
    "sig_line",
    [
        pytest.param(GO_PETER_SIG[:60] + "ABCD" + GO_PETER_SIG[60:], id="longer-signature"),
        pytest.param(GO_PETER_SIG.replace("x08go/ZJ", "x08go/ZK"), id="flipped-bit"),
    ],
)
def test_failing_signature_by_the_key_rejects_the_note(sig_line: str) -> None:
    note = GO_TEXT + "\n" + GO_ENOCH_SIG + sig_line
    with pytest.raises(UnverifiedNote):
        open_note(note, parse_verify_key(GO_VKEY))


# --- malformed notes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        pytest.param(GO_TEXT, id="no-signatures-no-blank-line"),
        pytest.param(GO_TEXT + GO_PETER_SIG, id="missing-blank-line"),
        pytest.param(GO_TEXT + "\n", id="no-signature"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG[:-1], id="unterminated-signature"),
        pytest.param("\x01" + GO_TEXT + "\n" + GO_PETER_SIG, id="control-character"),
        pytest.param("\udcff" + GO_TEXT + "\n" + GO_PETER_SIG, id="not-utf8"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG.replace("Peter", "Bad "), id="space-in-name"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG.replace("Peter", "a+"), id="plus-in-name"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG.replace("x08g", "x08g!"), id="bad-base64"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG.replace("AM=", "AN="), id="non-canonical"),
        pytest.param(GO_TEXT + "\n\u2014 PeterNeumann x08g\n", id="signature-too-short"),
        pytest.param(GO_TEXT + "\n- PeterNeumann x08go\n", id="hyphen-not-em-dash"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG + "Unexpected line.\n", id="trailing-garbage"),
        pytest.param(GO_TEXT + "\n" + GO_PETER_SIG * 101, id="too-many-signatures"),
    ],
)
def test_malformed_notes_are_rejected(note: str) -> None:
    with pytest.raises(MalformedNote):
        open_note(note, parse_verify_key(GO_VKEY))


def test_sixteen_signatures_are_accepted() -> None:
    note = GO_TEXT + "\n" + GO_ENOCH_SIG * 15 + GO_PETER_SIG
    assert open_note(note, parse_verify_key(GO_VKEY)) == GO_TEXT


def test_blank_lines_in_the_text_are_kept() -> None:
    key = generate_signing_key(ORIGIN)
    body = "first\n\nthird\n\n"
    assert open_note(sign_note(body, key), key.verify_key) == body


@pytest.mark.parametrize(
    ("body", "name"),
    [
        pytest.param("no newline", ORIGIN, id="no-final-newline"),
        pytest.param("", ORIGIN, id="empty"),
        pytest.param("tab\there\n", ORIGIN, id="control-character"),
        pytest.param("text\n", "bad name", id="space-in-key-name"),
        pytest.param("text\n", "a+b", id="plus-in-key-name"),
    ],
)
def test_sign_note_rejects_bad_input(body: str, name: str) -> None:
    with pytest.raises(MalformedNote):
        sign_note(body, signing_key_from_seed(name, bytes(32)))


def test_errors_share_a_base() -> None:
    for error in (MalformedNote, MalformedCheckpoint, UnverifiedNote, WrongOrigin):
        assert issubclass(error, NoteError)
