"""C2SP signed notes (c2sp.org/signed-note): the format of the log's checkpoints and of the
erasure receipts.

Ed25519 signatures only (signature type 0x01), made and checked through `ledger.contract.crypto`.
The wire format matches golang.org/x/mod/sumdb/note byte for byte. Witnesses' cosignatures
(type 0x04) are signature lines too, read with `split_note` and checked by
`ledger.log.cosignature`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.contract.crypto import (
    ED25519_TYPE,
    BadSignature,
    SigningKey,
    VerifyKey,
    b64,
    b64decode_strict,
    sign,
    verify,
)

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note; the spec requires accepting 16
_KEY_HASH_BYTES = 4


class NoteError(Exception):
    """Base for every signed-note and checkpoint failure."""


class MalformedNote(NoteError):
    """The note text or its signature lines do not follow the signed-note format."""


class UnverifiedNote(NoteError):
    """No signature by the expected key verifies, or one by that key fails to verify."""


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: `— <name> base64(key hash || signature)`."""

    name: str
    key_hash: bytes
    signature: bytes
    line: str  # as it was written, without its newline

    def by(self, key: VerifyKey) -> bool:
        """Whether the line names `key` (its name and its key hash, both)."""
        return self.name == key.name and self.key_hash == key.key_hash


def sign_note(body: str, key: SigningKey) -> str:
    """Sign note text: the text, a blank line, then `— <name> base64(key hash || signature)`."""
    if not body.endswith("\n") or not is_note_text(body):
        raise MalformedNote("note text is UTF-8 without control characters, ending in a newline")
    if not is_key_name(key.name):
        raise MalformedNote(f"invalid key name {key.name!r}")
    if key.signature_type != ED25519_TYPE:
        raise MalformedNote("notes are signed with Ed25519 note keys (type 0x01)")
    signature = sign(key, body.encode())
    return f"{body}\n{SIGNATURE_PREFIX}{key.name} {b64(key.verify_key.key_hash + signature)}\n"


def open_note(text: str, key: VerifyKey) -> str:
    """Return a signed note's text once a signature by `key` verifies.

    Signatures by other keys (another name or key hash) are ignored; a signature by `key`
    that fails to verify rejects the whole note.
    """
    if key.signature_type != ED25519_TYPE:
        raise UnverifiedNote("notes are verified with Ed25519 note keys (type 0x01)")
    # 1-3. The text, and its signature lines.
    body, signatures = split_note(text)
    # 4. Those by `key` must verify.
    message = body.encode()
    verified = False
    for sig in signatures:
        if not sig.by(key):
            continue
        try:
            verify(key, message, sig.signature)
        except BadSignature as exc:
            raise UnverifiedNote(f"invalid signature by key {key.key_id}") from exc
        verified = True
    # 5. At least one signature by `key` is required.
    if not verified:
        raise UnverifiedNote(f"no signature by key {key.key_id}")
    return body


def split_note(text: str) -> tuple[str, list[NoteSignature]]:
    """A note's text (ending in its newline) and its signature lines, none verified."""
    # 1. The whole note is valid note text.
    if not is_note_text(text):
        raise MalformedNote("a note is UTF-8 without control characters other than newline")
    # 2. The last blank line separates the text from the signature lines.
    split = text.rfind("\n\n")
    if split < 0:
        raise MalformedNote("no blank line before the signatures")
    body, signature_block = text[: split + 1], text[split + 2 :]
    if not signature_block.endswith("\n"):
        raise MalformedNote("the signature lines do not end in a newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"more than {MAX_SIGNATURES} signatures")
    # 3. Every line is a signature line.
    return body, [NoteSignature(*_parse_signature_line(line), line) for line in lines]


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """Split `— <name> <base64>` into the name, the 4-byte key hash and the signature."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote(f"not a signature line: {line!r}")
    name, _, blob = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_key_name(name):
        raise MalformedNote(f"invalid key name in signature line {line!r}")
    try:
        raw = b64decode_strict(blob)
    except ValueError as exc:
        raise MalformedNote(f"signature is not canonical base64 in {line!r}") from exc
    if len(raw) <= _KEY_HASH_BYTES:
        raise MalformedNote(f"signature too short in {line!r}")
    return name, raw[:_KEY_HASH_BYTES], raw[_KEY_HASH_BYTES:]


def is_note_text(text: str) -> bool:
    """Whether `text` encodes as UTF-8 and holds no ASCII control character but newline."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return not any(c < " " and c != "\n" for c in text)


def is_key_name(name: str) -> bool:
    """Key names are non-empty and hold no Unicode space or '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)
