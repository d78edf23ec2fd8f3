"""Per-case data keys, stored only wrapped by the key-encryption key (KEK) from a file.

The KEK lives in `$LEDGER_KEYS/kek.key` (mode 0600); wrapped keys live in a `KeyTable`
apart from the event store. Destroying a case's key (crypto-shredding) makes every sealed
byte of that case unreadable, wherever the ciphertext is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ledger import crypto
from ledger.errors import Conflict
from ledger.storage.base import KeyTable

_WRAP_DOMAIN = b"ledger-kek-v1\n"


def write_secret(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only (0600), refusing to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def create_kek(path: Path) -> bool:
    """Create a random KEK file if there is none; True when one was created."""
    if path.exists():
        return False
    key = crypto.new_data_key()
    kek_id = crypto.sha256(key)[:4].hex()
    write_secret(path, json.dumps({"id": kek_id, "key": crypto.b64(key)}).encode())
    return True


def load_kek(path: Path) -> tuple[str, bytes]:
    data = json.loads(path.read_text())
    return str(data["id"]), crypto.b64decode_strict(data["key"])


class KeyStore:
    """Create, unwrap and destroy per-case data keys."""

    def __init__(self, table: KeyTable, kek_path: Path) -> None:
        self.table = table
        self.kek_id, self._kek = load_kek(kek_path)

    @staticmethod
    def _associated(case_id: str) -> bytes:
        return _WRAP_DOMAIN + case_id.encode()

    def create(self, case_id: str) -> bytes:
        """A new data key for a new case; Conflict if the case already has one."""
        key = crypto.new_data_key()
        wrapped = crypto.seal(self._kek, key, self._associated(case_id))
        if not self.table.insert(case_id, self.kek_id, wrapped):
            raise Conflict("write conflict: the case was opened concurrently; retry")
        return key

    def get(self, case_id: str) -> bytes | None:
        """The unwrapped data key of a case, or None once destroyed."""
        found = self.table.get(case_id)
        if found is None:
            return None
        _kek_id, wrapped = found
        return crypto.unseal(self._kek, wrapped, self._associated(case_id))

    def destroy(self, case_id: str) -> None:
        """Crypto-shred a case: delete its wrapped key (idempotent)."""
        self.table.delete(case_id)
