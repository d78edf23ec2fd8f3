"""Log checkpoints (c2sp.org/tlog-checkpoint): the signed tree head, a signed note
(`ledger.contract.notes`) whose text is the origin, the tree size and the root hash."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.contract.crypto import VerifyKey, b64, b64decode_strict
from ledger.contract.notes import (
    MalformedNote,
    NoteError,
    is_note_text,
    open_note,
)

_ROOT_BYTES = 32
_MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in every other implementation
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


class MalformedCheckpoint(MalformedNote):
    """A note's text is not a well-formed checkpoint body."""


class WrongOrigin(NoteError):
    """A checkpoint comes from another log than the one expected."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size and RFC 9162 root hash."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or not is_note_text(self.origin):
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
        if not body.endswith("\n") or not is_note_text(body):
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
