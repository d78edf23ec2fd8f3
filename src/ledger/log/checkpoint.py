"""C2SP signed notes (c2sp.org/signed-note) and log checkpoints (c2sp.org/tlog-checkpoint).

Ed25519 signatures only (signature type 0x01), made and checked through `ledger.contract.crypto`.
The wire format matches golang.org/x/mod/sumdb/note byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.contract.crypto import (
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
_ROOT_BYTES = 32
_MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every other implementation
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


class NoteError(Exception):
    """Base for every signed-note and checkpoint failure."""


class MalformedNote(NoteError):
    """The note text or its signature lines do not follow the signed-note format."""


class MalformedCheckpoint(MalformedNote):
    """A note's text is not a well-formed checkpoint body."""


class UnverifiedNote(NoteError):
    """No signature by the expected key verifies, or one by that key fails to verify."""


class WrongOrigin(NoteError):
    """A checkpoint comes from another log than the one expected."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size and RFC 9162 root hash."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or not _is_note_text(self.origin):
            raise ValueError("a checkpoint origin is one non-empty line of note text")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise ValueError("a checkpoint tree size is an unsigned 64-bit integer")
        if len(self.root) != _ROOT_BYTES:
            raise ValueError(f"a checkpoint root hash is {_ROOT_BYTES} bytes")

    def body(self) -> str:
        """The note text: origin, size and base64 root, each ending in a newline."""
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint note text strictly; extension lines are checked, then dropped."""
        # 1. Note text ending in a newline, with at least three lines, none of them empty.
        if not body.endswith("\n") or not _is_note_text(body):
            raise MalformedCheckpoint("a checkpoint is note text ending in a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise MalformedCheckpoint("a checkpoint has at least three lines, none empty")
        origin, size_text, root_text = lines[:3]
        # 2. Decimal size without leading zeros, canonical base64 root.
        if not _SIZE_RE.fullmatch(size_text):
            raise MalformedCheckpoint(f"tree size {size_text!r} is not canonical decimal")
        try:
            root = b64decode_strict(root_text)
        except ValueError as exc:
            raise MalformedCheckpoint("root hash is not canonical base64") from exc
        # 3. Value ranges, as for any Checkpoint.
        try:
            return cls(origin, int(size_text), root)
        except ValueError as exc:
            raise MalformedCheckpoint(str(exc)) from exc


def sign_note(body: str, key: SigningKey) -> str:
    """Sign note text: the text, a blank line, then `— <name> base64(key hash || signature)`."""
    if not body.endswith("\n") or not _is_note_text(body):
        raise MalformedNote("note text is UTF-8 without control characters, ending in a newline")
    if not _is_key_name(key.name):
        raise MalformedNote(f"invalid key name {key.name!r}")
    signature = sign(key, body.encode())
    return f"{body}\n{SIGNATURE_PREFIX}{key.name} {b64(key.verify_key.key_hash + signature)}\n"


def open_note(text: str, key: VerifyKey) -> str:
    """Return a signed note's text once a signature by `key` verifies.

    Signatures by other keys (another name or key hash) are ignored; a signature by `key`
    that fails to verify rejects the whole note.
    """
    # 1. The whole note is valid note text.
    if not _is_note_text(text):
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
    # 3. Every line is a signature line; those by `key` must verify.
    message = body.encode()
    verified = False
    for line in lines:
        name, key_hash, signature = _parse_signature_line(line)
        if name != key.name or key_hash != key.key_hash:
            continue
        try:
            verify(key, message, signature)
        except BadSignature as exc:
            raise UnverifiedNote(f"invalid signature by key {key.key_id}") from exc
        verified = True
    # 4. At least one signature by `key` is required.
    if not verified:
        raise UnverifiedNote(f"no signature by key {key.key_id}")
    return body


def verify_checkpoint(text: str, key: VerifyKey, origin: str | None = None) -> Checkpoint:
    """Open a signed checkpoint from the log whose key (and origin) is `key`.

    The key's name must equal the checkpoint's origin and, if given, `origin`.
    """
    # 1. The caller's expected origin is the log key's name.
    if origin is not None and origin != key.name:
        raise WrongOrigin(f"expected origin {origin!r}, but the log key is {key.name!r}")
    # 2. Verify the signature, then parse the body.
    checkpoint = Checkpoint.parse(open_note(text, key))
    # 3. The checkpoint names the same log.
    if checkpoint.origin != key.name:
        raise WrongOrigin(f"checkpoint origin {checkpoint.origin!r} is not {key.name!r}")
    return checkpoint


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """Split `— <name> <base64>` into the name, the 4-byte key hash and the signature."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote(f"not a signature line: {line!r}")
    name, _, blob = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not _is_key_name(name):
        raise MalformedNote(f"invalid key name in signature line {line!r}")
    try:
        raw = b64decode_strict(blob)
    except ValueError as exc:
        raise MalformedNote(f"signature is not canonical base64 in {line!r}") from exc
    if len(raw) <= _KEY_HASH_BYTES:
        raise MalformedNote(f"signature too short in {line!r}")
    return name, raw[:_KEY_HASH_BYTES], raw[_KEY_HASH_BYTES:]


def _is_note_text(text: str) -> bool:
    """Whether `text` encodes as UTF-8 and holds no ASCII control character but newline."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return not any(c < " " and c != "\n" for c in text)


def _is_key_name(name: str) -> bool:
    """Key names are non-empty and hold no Unicode space or '+'."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)
