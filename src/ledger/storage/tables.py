"""Table access both SQL backends share: meta, the log's reads, erasures, receipt codes,
checkpoints, events, relations, agencies and their keys (tokens: `tokens.py`)."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from eventsourcing.persistence import StoredEvent

from ledger.storage.base import (
    IN_LIST,
    Agency,
    AgencyKey,
    Erasure,
    ReceiptCode,
    RecordedEvent,
    Store,
    StoredCheckpoint,
    in_lists,
)
from ledger.storage.cosignatures import SQLCosignatures
from ledger.storage.notices import SQLNotices
from ledger.storage.schema import LEDGER_TABLES, Cursor
from ledger.storage.tokens import SQLTokens
from ledger.storage.webhooks import SQLWebhooks


class SQLTables(SQLNotices, SQLWebhooks, SQLCosignatures, SQLTokens, Store):
    """Ledger tables in SQL; `{s}` is the schema prefix, `?` the placeholder. The log's
    appends are the engine's (`append.py`)."""

    # Appended to a SELECT that must lock the agency row it reads until commit (PostgreSQL's
    # READ COMMITTED would otherwise act on a row another transaction is changing); SQLite
    # serialises every writer with BEGIN IMMEDIATE and needs none.
    share_lock = ""

    # -- backend hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor in a write transaction that serialises log appends; commit on exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads."""

    @abstractmethod
    def _case_versions(self, cur: Cursor, case_ids: Sequence[str]) -> dict[str, int]:
        """The latest stored version of each case that has events, keyed by `str(UUID)`,
        inside the transaction."""

    # -- helpers ---------------------------------------------------------------------------------

    def _statements(self, script: str) -> Iterator[str]:
        for statement in script.split(";"):
            if statement.strip():
                yield self.sql(statement)

    def _create_ledger_tables(self, cur: Cursor) -> None:
        for statement in self._statements(LEDGER_TABLES):
            cur.execute(statement)

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._read() as cur:
            cur.execute(self.sql("SELECT value FROM {s}ledger_meta WHERE key = ?"), (key,))
            row = cur.fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}ledger_meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
                ),
                (key, value),
            )

    # -- the log ---------------------------------------------------------------------------------

    def _nodes(self, cur: Cursor, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        if not keys:
            return []
        # OR of point lookups: both backends use the primary key for each (a row-value
        # `IN (VALUES ...)` made SQLite scan the whole table).
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(keys))
        flat = [v for key in keys for v in key]
        cur.execute(
            self.sql(f"SELECT level, idx, hash FROM {{s}}tree_nodes WHERE {where}"),  # noqa: S608
            flat,
        )
        found = {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in cur.fetchall()}
        return [found[key] for key in keys]

    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        with self._read() as cur:
            return self._nodes(cur, keys)

    def log_size(self) -> int:
        with self._read() as cur:
            cur.execute(self.sql("SELECT size FROM {s}log_head WHERE id = 1"))
            row = cur.fetchone()
        return 0 if row is None else int(row["size"])

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT position, entry FROM {s}log_entries"
                    " WHERE position >= ? AND position < ? ORDER BY position"
                ),
                (start, end),
            )
            return [(int(r["position"]), bytes(r["entry"])) for r in cur.fetchall()]

    def entry_owner(self, position: int) -> tuple[str, str | None] | None:
        with self._read() as cur:
            cur.execute(
                self.sql("SELECT kind, agency FROM {s}log_entries WHERE position = ?"), (position,)
            )
            r = cur.fetchone()
        return None if r is None else (str(r["kind"]), r["agency"])

    def case_readers(self, case_id: str) -> set[str]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT DISTINCT agency FROM {s}log_entries WHERE case_id = ? AND kind = ?"
                ),
                (case_id, "access"),
            )
            return {str(r["agency"]) for r in cur.fetchall()}

    # -- erasures --------------------------------------------------------------------------------

    _ERASURE = (
        "SELECT case_id, event_id, position, erased_at, key_destroyed, receipt FROM {s}erasures"
    )

    @staticmethod
    def _erasure(r: Any) -> Erasure:
        return Erasure(
            r["case_id"],
            r["event_id"],
            int(r["position"]),
            r["erased_at"],
            bool(r["key_destroyed"]),
            r["receipt"],
        )

    def erasure(self, case_id: str) -> Erasure | None:
        with self._read() as cur:
            cur.execute(self.sql(self._ERASURE + " WHERE case_id = ?"), (case_id,))
            r = cur.fetchone()
        return None if r is None else self._erasure(r)

    def unfinished_erasures(self) -> list[Erasure]:
        with self._read() as cur:
            cur.execute(self.sql(self._ERASURE + " WHERE key_destroyed = 0 OR receipt IS NULL"))
            return [self._erasure(r) for r in cur.fetchall()]

    def mark_key_destroyed(self, case_id: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql("UPDATE {s}erasures SET key_destroyed = 1 WHERE case_id = ?"), (case_id,)
            )

    def set_receipt(self, case_id: str, receipt: str, answer_extra: dict[str, Any]) -> str:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}erasures SET receipt = ? WHERE case_id = ? AND receipt IS NULL"
                    " RETURNING event_id"
                ),
                (receipt, case_id),
            )
            row = cur.fetchone()
            if row is None:  # set already (or no such erasure): the stored one stands
                cur.execute(
                    self.sql("SELECT receipt FROM {s}erasures WHERE case_id = ?"), (case_id,)
                )
                stored = cur.fetchone()
                if stored is None:
                    raise KeyError(case_id)
                return str(stored["receipt"])
            cur.execute(
                self.sql("UPDATE {s}events_index SET extra = ? WHERE event_id = ?"),
                (json.dumps(answer_extra, sort_keys=True), row["event_id"]),
            )
        return receipt

    # -- receipt codes ---------------------------------------------------------------------------

    def index_receipt_codes(self, rows: Sequence[ReceiptCode]) -> None:
        with self._write() as cur:
            cur.executemany(
                self.sql(
                    "INSERT INTO {s}receipt_codes (code_mac, case_id, consent_id, kind)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                [(r.code_mac, r.case_id, r.consent_id, r.kind) for r in rows],
            )

    def receipt_code(self, code_mac: bytes) -> ReceiptCode | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT code_mac, case_id, consent_id, kind FROM {s}receipt_codes"
                    " WHERE code_mac = ?"
                ),
                (code_mac,),
            )
            r = cur.fetchone()
        if r is None:
            return None
        return ReceiptCode(bytes(r["code_mac"]), r["case_id"], r["consent_id"], r["kind"])

    def drop_receipt_codes(self, case_id: str) -> None:
        with self._write() as cur:
            cur.execute(self.sql("DELETE FROM {s}receipt_codes WHERE case_id = ?"), (case_id,))

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self, size: int, root: bytes, note: str, signed_at: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "INSERT INTO {s}checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING"
                ),
                (size, root, note, signed_at),
            )

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT size, root, note, signed_at FROM {s}checkpoints"
                    " ORDER BY size DESC LIMIT 1"
                )
            )
            r = cur.fetchone()
        if r is None:
            return None
        return StoredCheckpoint(int(r["size"]), bytes(r["root"]), r["note"], r["signed_at"])

    # -- events ----------------------------------------------------------------------------------

    _FIND_EVENTS = (
        "SELECT e.event_id, e.case_id, e.position, e.case_version, e.fingerprint,"
        " e.extra, l.leaf_hash FROM {s}events_index e"
        " JOIN {s}log_entries l ON l.position = e.position WHERE e.event_id IN "
    )

    def find_event(self, event_id: str) -> RecordedEvent | None:
        return self.find_events([event_id]).get(event_id)

    def find_events(self, event_ids: Sequence[str]) -> dict[str, RecordedEvent]:
        found: dict[str, RecordedEvent] = {}
        with self._read() as cur:
            for chunk, in_list in in_lists(event_ids):
                cur.execute(self.sql(self._FIND_EVENTS + in_list), chunk)
                for r in cur.fetchall():
                    found[str(r["event_id"])] = self._recorded(r)
        return found

    def related(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        unique = sorted(set(pairs))
        with self._read() as cur:
            for chunk, _ in in_lists(unique, IN_LIST // 2):  # two parameters a pair
                where = " OR ".join(["(case_id = ? AND agency = ?)"] * len(chunk))
                cur.execute(
                    self.sql(f"SELECT case_id, agency FROM {{s}}case_relations WHERE {where}"),  # noqa: S608
                    [v for pair in chunk for v in pair],
                )
                found.update((str(r["case_id"]), str(r["agency"])) for r in cur.fetchall())
        return found

    def case_versions(self, case_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._read() as cur:
            for chunk, _ in in_lists(case_ids):
                found.update(self._case_versions(cur, chunk))
        return found

    def events_after(self, versions: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        if not versions:
            return []
        with self._read() as cur:
            return self._events_after(cur, versions)

    @abstractmethod
    def _events_after(self, cur: Cursor, versions: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        """`events_after` inside a transaction; originator ids as UUIDs."""

    @staticmethod
    def _recorded(r: Any) -> RecordedEvent:
        return RecordedEvent(
            event_id=r["event_id"],
            case_id=r["case_id"],
            position=int(r["position"]),
            case_version=int(r["case_version"]),
            fingerprint=bytes(r["fingerprint"]),
            leaf_hash=bytes(r["leaf_hash"]),
            extra=json.loads(r["extra"]),
        )

    # -- agencies --------------------------------------------------------------------------------

    def agency(self, agency_id: str) -> Agency | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT id, name, type, position, removed_at FROM {s}agencies WHERE id = ?"
                ),
                (agency_id,),
            )
            r = cur.fetchone()
        if r is None:
            return None
        return Agency(r["id"], r["name"], r["type"], int(r["position"]), r["removed_at"])

    def agencies(self) -> list[Agency]:
        with self._read() as cur:
            cur.execute(
                self.sql("SELECT id, name, type, position, removed_at FROM {s}agencies ORDER BY id")
            )
            return [
                Agency(r["id"], r["name"], r["type"], int(r["position"]), r["removed_at"])
                for r in cur.fetchall()
            ]

    def live_agencies(self, agency_ids: Sequence[str]) -> set[str]:
        with self._read() as cur:
            return self._live_agencies(cur, agency_ids)

    _LIVE_AGENCIES = (
        "SELECT a.id FROM {s}agencies a WHERE a.removed_at IS NULL AND EXISTS"
        " (SELECT 1 FROM {s}agency_keys k WHERE k.agency = a.id AND k.revoked_at IS NULL)"
        " AND a.id IN "
    )

    def _live_agencies(self, cur: Cursor, agency_ids: Sequence[str]) -> set[str]:
        """`live_agencies` inside the caller's transaction (no query for none)."""
        live: set[str] = set()
        for chunk, in_list in in_lists(sorted(set(agency_ids))):
            cur.execute(self.sql(self._LIVE_AGENCIES + in_list), chunk)
            live.update(str(r["id"]) for r in cur.fetchall())
        return live

    def mark_agency_removed(self, agency: str, at: str) -> None:
        with self._write() as cur:
            cur.execute(
                self.sql("UPDATE {s}agencies SET removed_at = ? WHERE id = ?"), (at, agency)
            )

    def remove_agency(self, agency: str, at: str) -> int:
        """The agency's row is updated first: on PostgreSQL its lock makes a concurrent
        `add_token` wait and then see the removal, or (holding the lock first) commit its
        token before the revocation below reads the tokens."""
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}agencies SET removed_at = COALESCE(removed_at, ?)"
                    " WHERE id = ? RETURNING id"
                ),
                (at, agency),
            )
            if cur.fetchone() is None:
                raise KeyError(agency)
            return self._revoke_tokens(cur, "agency", agency, at)

    @staticmethod
    def _agency_key(r: Any) -> AgencyKey:
        revoked = r["revoked_at"]
        return AgencyKey(
            r["key_id"],
            r["agency"],
            r["line"],
            int(r["added_at"]),
            None if revoked is None else int(revoked),
        )

    def agency_key(self, key_id: str) -> AgencyKey | None:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT key_id, agency, line, added_at, revoked_at"
                    " FROM {s}agency_keys WHERE key_id = ?"
                ),
                (key_id,),
            )
            r = cur.fetchone()
        return None if r is None else self._agency_key(r)

    def agency_keys(self, agency: str) -> list[AgencyKey]:
        with self._read() as cur:
            cur.execute(
                self.sql(
                    "SELECT key_id, agency, line, added_at, revoked_at"
                    " FROM {s}agency_keys WHERE agency = ? ORDER BY added_at"
                ),
                (agency,),
            )
            return [self._agency_key(r) for r in cur.fetchall()]
