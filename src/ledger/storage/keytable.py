"""The case key table: its contract (`KeyTable`), and the implementation both SQL backends
share: wrapped per-case keys and their confirmation, take-over, rewrapping and deletion."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager

from ledger.storage.base import IN_LIST, SQLDialect, in_lists
from ledger.storage.schema import KEY_TABLE, Cursor


class KeyTable(ABC):
    """Wrapped per-case data keys, stored apart from the event store."""

    @abstractmethod
    def setup(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def insert(self, case_id: str, kek_id: str, wrapped: bytes, created_at: str) -> bool:
        """Insert a wrapped key, unconfirmed; False if the case already has one."""

    @abstractmethod
    def insert_many(self, rows: Sequence[tuple[str, str, bytes, str]]) -> set[str]:
        """`insert` of many (case_id, kek_id, wrapped, created_at) in one transaction; the
        case ids that had no key and got this one."""

    @abstractmethod
    def confirm(self, case_id: str) -> None:
        """Mark a key as belonging to a committed case."""

    @abstractmethod
    def confirm_many(self, case_ids: Sequence[str]) -> None:
        """`confirm` of many, in one transaction."""

    @abstractmethod
    def unconfirmed(self, created_before: str) -> list[tuple[str, bytes]]:
        """(case_id, wrapped) of keys never confirmed and created (or taken over) before a
        time: crash leftovers, or keys of new cases whose commit failed."""

    @abstractmethod
    def pending(self, case_id: str) -> tuple[str, bytes] | None:
        """(kek_id, wrapped) of a case's key if it is not confirmed yet, else None."""

    @abstractmethod
    def take_over(
        self, case_id: str, wrapped: bytes, kek_id: str, rewrapped: bytes, created_at: str
    ) -> bool:
        """Replace an unconfirmed key's wrapping (the same key, a fresh nonce) and its time,
        if it is still unconfirmed and wrapped as `wrapped`."""

    @abstractmethod
    def delete_unconfirmed(self, case_id: str, wrapped: bytes) -> bool:
        """Delete a key if it is still unconfirmed and wrapped as `wrapped`."""

    @abstractmethod
    def get_many(self, case_ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """`get` of many: (kek_id, wrapped) of those cases that have a key."""

    @abstractmethod
    def get(self, case_id: str) -> tuple[str, bytes] | None:
        """(kek_id, wrapped) of a case, or None."""

    @abstractmethod
    def delete(self, case_id: str) -> None:
        """Destroy a case's key (idempotent)."""

    @abstractmethod
    def wrapped_by_other(self, kek_id: str, limit: int) -> list[tuple[str, str, bytes]]:
        """(case_id, kek_id, wrapped) of keys not wrapped by `kek_id`."""

    @abstractmethod
    def rewrap(self, case_id: str, old_kek: str, new_kek: str, wrapped: bytes) -> bool:
        """Replace a wrapped key if it is still wrapped by `old_kek`."""

    @abstractmethod
    def compact(self) -> None:
        """Reclaim space that may still hold old wrapped keys (WAL, dead tuples)."""


class SQLKeyTable(SQLDialect, KeyTable):
    """Wrapped case keys in SQL; backends supply connections and placeholders."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]: ...

    def setup(self) -> None:
        with self._write() as cur:
            cur.execute(self.sql(KEY_TABLE))

    def insert(self, case_id: str, kek_id: str, wrapped: bytes, created_at: str) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}case_keys (case_id, kek_id, wrapped, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING case_id"
                ),
                (case_id, kek_id, wrapped, created_at),
            )
            return cur.fetchone() is not None

    def insert_many(self, rows: Sequence[tuple[str, str, bytes, str]]) -> set[str]:
        inserted: set[str] = set()
        with self._write() as cur:
            for chunk, _ in in_lists(rows, IN_LIST // 4):  # four parameters a row
                values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}case_keys (case_id, kek_id, wrapped, created_at)"  # noqa: S608
                        f" VALUES {values} ON CONFLICT DO NOTHING RETURNING case_id"
                    ),
                    [v for row in chunk for v in row],
                )
                inserted.update(str(r["case_id"]) for r in cur.fetchall())
        return inserted

    def confirm(self, case_id: str) -> None:
        self.confirm_many([case_id])

    def confirm_many(self, case_ids: Sequence[str]) -> None:
        with self._write() as cur:
            for chunk, in_list in in_lists(case_ids):
                cur.execute(
                    self.sql(
                        "UPDATE {s}case_keys SET confirmed = 1"  # noqa: S608
                        f" WHERE case_id IN {in_list}"
                    ),
                    chunk,
                )

    def unconfirmed(self, created_before: str) -> list[tuple[str, bytes]]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT case_id, wrapped FROM {s}case_keys"
                    " WHERE confirmed = 0 AND created_at < ?"
                ),
                (created_before,),
            )
            return [(str(r["case_id"]), bytes(r["wrapped"])) for r in cur.fetchall()]

    def pending(self, case_id: str) -> tuple[str, bytes] | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT kek_id, wrapped FROM {s}case_keys WHERE case_id = ? AND confirmed = 0"
                ),
                (case_id,),
            )
            r = cur.fetchone()
        return None if r is None else (str(r["kek_id"]), bytes(r["wrapped"]))

    def take_over(
        self, case_id: str, wrapped: bytes, kek_id: str, rewrapped: bytes, created_at: str
    ) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}case_keys SET kek_id = ?, wrapped = ?, created_at = ?"
                    " WHERE case_id = ? AND confirmed = 0 AND wrapped = ? RETURNING case_id"
                ),
                (kek_id, rewrapped, created_at, case_id, wrapped),
            )
            return cur.fetchone() is not None

    def delete_unconfirmed(self, case_id: str, wrapped: bytes) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "DELETE FROM {s}case_keys WHERE case_id = ? AND confirmed = 0 AND wrapped = ?"
                    " RETURNING case_id"
                ),
                (case_id, wrapped),
            )
            return cur.fetchone() is not None

    def get_many(self, case_ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        found: dict[str, tuple[str, bytes]] = {}
        with self._read() as cur:
            for chunk, in_list in in_lists(case_ids):
                cur.execute(
                    self.sql(
                        "SELECT case_id, kek_id, wrapped FROM {s}case_keys"  # noqa: S608
                        f" WHERE case_id IN {in_list}"
                    ),
                    chunk,
                )
                for r in cur.fetchall():
                    found[str(r["case_id"])] = (str(r["kek_id"]), bytes(r["wrapped"]))
        return found

    def get(self, case_id: str) -> tuple[str, bytes] | None:
        return self.get_many([case_id]).get(case_id)

    def delete(self, case_id: str) -> None:
        with self._write() as cur:
            cur.execute(self.sql("DELETE FROM {s}case_keys WHERE case_id = ?"), (case_id,))
        self.compact()

    def wrapped_by_other(self, kek_id: str, limit: int) -> list[tuple[str, str, bytes]]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT case_id, kek_id, wrapped FROM {s}case_keys WHERE kek_id <> ? LIMIT ?"
                ),
                (kek_id, limit),
            )
            return [(r["case_id"], r["kek_id"], bytes(r["wrapped"])) for r in cur.fetchall()]

    def rewrap(self, case_id: str, old_kek: str, new_kek: str, wrapped: bytes) -> bool:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}case_keys SET kek_id = ?, wrapped = ?"
                    " WHERE case_id = ? AND kek_id = ? RETURNING case_id"
                ),
                (new_kek, wrapped, case_id, old_kek),
            )
            return cur.fetchone() is not None
