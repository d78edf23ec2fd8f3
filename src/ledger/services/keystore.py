"""Per-case data keys, stored only wrapped by the key-encryption key (KEK) from a file.

The KEK lives in `$LEDGER_KEYS/kek.key` (mode 0600); wrapped keys live in a `KeyTable`
apart from the event store. Destroying a case's key (crypto-shredding) makes every sealed
byte of that case unreadable, wherever the ciphertext is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ledger.contract import crypto
from ledger.errors import WriteConflict
from ledger.private_files import write_secret
from ledger.storage.keytable import KeyTable

_WRAP_DOMAIN = b"ledger-kek-v1\n"


def create_kek(path: Path) -> bool:
    """Create a random KEK file if there is none; True when one was created."""
    if path.exists():
        return False
    key = crypto.new_data_key()
    kek_id = crypto.sha256(key)[:4].hex()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = {"id": kek_id, "key": crypto.b64(key), "created_at": created}
    write_secret(path, json.dumps(data).encode())
    return True


def load_kek(path: Path) -> tuple[str, bytes]:
    data = json.loads(path.read_text())
    key = crypto.b64decode_strict(data["key"])
    if len(key) != crypto.DATA_KEY_BYTES or crypto.sha256(key)[:4].hex() != data["id"]:
        raise ValueError(f"{path} is not a valid key-encryption key")
    return str(data["id"]), key


def kek_created_at(path: Path) -> datetime:
    data = json.loads(path.read_text())
    return datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def shred_file(path: Path) -> None:
    """Overwrite a key file with zeros, flush it to disk, and remove it."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()


class KeyStore:
    """Create, unwrap and destroy per-case data keys.

    During a KEK rotation a second file, `kek.next.key`, holds the new KEK: new case keys are
    wrapped with it, and keys wrapped by either KEK unwrap.
    """

    def __init__(self, table: KeyTable, kek_path: Path) -> None:
        self.table = table
        self.kek_path = kek_path
        self.next_path = kek_path.with_name("kek.next.key")
        self._keks: dict[str, bytes] = {}
        self.kek_id = ""
        self._rotating = False
        self._load()

    def _load(self) -> None:
        """Read the KEK files; finish a swap a crash interrupted."""
        if self.next_path.exists():
            try:
                kek_id, key = load_kek(self.kek_path)
                self._keks[kek_id] = key
            except (OSError, ValueError, KeyError):
                # The old KEK was shredded but the new one not yet moved into place.
                os.replace(self.next_path, self.kek_path)
        self._rotating = self.next_path.exists()
        self.kek_id, key = load_kek(self.next_path if self._rotating else self.kek_path)
        self._keks[self.kek_id] = key

    def _kek(self, kek_id: str) -> bytes:
        if kek_id not in self._keks:
            self._load()
        try:
            return self._keks[kek_id]
        except KeyError:
            raise crypto.SealBroken("the key-encryption key of this case key is gone") from None

    @staticmethod
    def _associated(case_id: str) -> bytes:
        return _WRAP_DOMAIN + case_id.encode()

    def check(self) -> None:
        """Raise unless the key store works now: its table answers, and a key wrapped with
        the current KEK unwraps (`GET /v1/health`). Nothing is written."""
        probe = "00000000-0000-4000-8000-000000000000"  # never a case id (uuid4 is random)
        self.table.get(probe)
        key = crypto.new_data_key()
        if self.unwrap(probe, self.kek_id, self.wrap(probe, key)) != key:
            raise crypto.SealBroken("the key-encryption key does not unwrap what it wrapped")

    def wrap(self, case_id: str, key: bytes) -> bytes:
        if not self._rotating and self.next_path.exists():
            self._load()  # another process started a rotation: wrap with the new KEK
        return crypto.seal(self._keks[self.kek_id], key, self._associated(case_id))

    def unwrap(self, case_id: str, kek_id: str, wrapped: bytes) -> bytes:
        return crypto.unseal(self._kek(kek_id), wrapped, self._associated(case_id))

    def create(self, case_id: str) -> bytes:
        """The data key for a new case (its `case.opened` not committed yet).

        An unconfirmed key may be there already: another `case.opened` of the same case in
        flight, or one that a crash interrupted before its commit (a retry then comes here
        again). It is shared, not refused: whichever submission commits first seals with it,
        the other one gets a write conflict. Taking it over re-wraps it with a fresh nonce,
        compare-and-set, so `Ledger.recover()` never deletes a key that is in use again.
        WriteConflict if the case's key is confirmed (the case committed meanwhile).
        """
        for _ in range(5):
            key = crypto.new_data_key()
            created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if self.table.insert(case_id, self.kek_id, self.wrap(case_id, key), created_at):
                return key
            found = self.table.pending(case_id)
            if found is None:
                if self.table.get(case_id) is not None:
                    break  # confirmed: the case committed
                continue  # deleted meanwhile: insert again
            kek_id, wrapped = found
            key = self.unwrap(case_id, kek_id, wrapped)
            rewrapped = self.wrap(case_id, key)
            if self.table.take_over(case_id, wrapped, self.kek_id, rewrapped, created_at):
                return key
        raise WriteConflict("write conflict: the case was opened concurrently; retry")

    def create_many(self, keys: dict[str, bytes]) -> set[str]:
        """Store the data keys of new cases (a batch's), unconfirmed, in one transaction; the
        case ids whose key was stored. A case that has a key already is left out: its items
        go through `create` one by one (which shares or takes over an unconfirmed key)."""
        created_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = [(c, self.kek_id, self.wrap(c, key), created_at) for c, key in keys.items()]
        return self.table.insert_many(rows)

    def discard_unconfirmed(self, case_id: str, wrapped: bytes) -> bool:
        """Delete a key that never got a committed case, unless it was taken over since."""
        if not self.table.delete_unconfirmed(case_id, wrapped):
            return False
        self.table.compact()
        return True

    def confirm(self, case_id: str) -> None:
        """The case's `case.opened` committed: its key is no longer a candidate orphan."""
        self.table.confirm(case_id)

    def confirm_many(self, case_ids: list[str]) -> None:
        if case_ids:
            self.table.confirm_many(case_ids)

    def get(self, case_id: str) -> bytes | None:
        """The unwrapped data key of a case, or None once destroyed."""
        return self.get_many([case_id]).get(case_id)

    def get_many(self, case_ids: list[str]) -> dict[str, bytes]:
        """`get` of many cases in one read: the unwrapped keys of those that have one."""
        return {
            case_id: self.unwrap(case_id, kek_id, wrapped)
            for case_id, (kek_id, wrapped) in self.table.get_many(case_ids).items()
        }

    def destroy(self, case_id: str) -> None:
        """Crypto-shred a case: delete its wrapped key (idempotent)."""
        self.table.delete(case_id)


def rotate_kek(
    store: KeyStore,
    batch: int = 500,
    grace_s: float = 2.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-wrap every live data key under a new KEK, then shred the old KEK file.

    Online and restartable: a crash at any point leaves every key wrapped by a KEK whose file
    still exists (the old one until the last key is re-wrapped, the new one from the start).
    Returns how many keys were re-wrapped; `progress(n)` after each batch of n.
    """
    # 1. The new KEK, written before any key uses it.
    create_kek(store.next_path)
    store._load()
    new_id = store.kek_id
    moved = 0
    # 2. Re-wrap key by key (compare-and-set on the old KEK id, so concurrent writers are safe).
    for attempt in range(2):
        if attempt:
            time.sleep(grace_s)  # let keys created just before other processes saw the new KEK land
        while rows := store.table.wrapped_by_other(new_id, batch):
            for case_id, kek_id, wrapped in rows:
                key = store.unwrap(case_id, kek_id, wrapped)
                if store.table.rewrap(case_id, kek_id, new_id, store.wrap(case_id, key)):
                    moved += 1
            if progress is not None:
                progress(len(rows))
    # 3. No key needs the old KEK any more: shred it and move the new one into place.
    store.table.compact()
    if store.kek_path.exists():
        shred_file(store.kek_path)
    os.replace(store.next_path, store.kek_path)
    store._keks = {new_id: store._keks[new_id]}
    return moved
