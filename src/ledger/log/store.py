"""What the log needs from storage, owned by the log: storage implements it (`Store`), and
the log never imports storage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: str


class LogStore(Protocol):
    """The stored log: entries in order, the tree's complete subtrees, signed checkpoints."""

    def log_size(self) -> int: ...

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Entries with start <= position < end, in order."""
        ...

    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        """Hashes of complete subtrees (level, index); KeyError if one is missing."""
        ...

    def entry_owner(self, position: int) -> tuple[str, str | None] | None:
        """(kind, agency) of the entry at a position, or None."""
        ...

    def save_checkpoint(self, size: int, root: bytes, note: str, signed_at: str) -> None:
        """Keep a signed checkpoint (one per size; a second one for a size is ignored)."""
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    def cosignatures(self, size: int) -> list[str]:
        """Witness cosignature lines gathered on the checkpoint of `size`."""
        ...
