"""The offline audit bundle: a checkpoint and every entry below it, in one private file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ledger.contract import crypto
from ledger.private_files import replace_private

BUNDLE_FORMAT = "ledger-audit-bundle-v1"


def checkpoint_size(note: str) -> int:
    """The size line of a checkpoint note (unverified: only to know how much to fetch)."""
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else 0


def write_bundle(path: Path, note: str, entries: Sequence[bytes]) -> None:
    """Write the bundle readable by its owner only (mode 0600), replacing any file at `path`.

    It holds every envelope of the log, which is pseudonymous personal data. The bytes go to
    a temporary file created 0600 in the same directory, renamed over `path` once complete:
    an existing file's wider mode is never kept, and no reader sees a half-written bundle.
    """
    data = {
        "format": BUNDLE_FORMAT,
        "checkpoint": note,
        "entries": [crypto.b64(e) for e in entries],
    }
    replace_private(path, json.dumps(data).encode())


def read_bundle(path: Path) -> tuple[str, list[bytes]]:
    data = json.loads(path.read_text())
    if data.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"not a {BUNDLE_FORMAT} file")
    return str(data["checkpoint"]), [crypto.b64decode_strict(e) for e in data["entries"]]
