"""The SQL both backends share; each backend supplies connections, placeholders and the
eventsourcing recorder (`sqlite.py`, `postgres.py`)."""

from __future__ import annotations

import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from eventsourcing.persistence import StoredEvent

from ledger.concurrency import GroupCommit
from ledger.log import merkle
from ledger.storage.base import (
    IN_LIST,
    Agency,
    AgencyGone,
    AgencyKey,
    Commit,
    ConflictError,
    Erasure,
    KeyTable,
    ReceiptCode,
    RecordedEvent,
    SQLDialect,
    StaleTime,
    Store,
    StoredCheckpoint,
    Token,
    in_lists,
)

log = logging.getLogger("ledger.storage")


class Cursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


LEDGER_TABLES = """
CREATE TABLE IF NOT EXISTS {s}ledger_meta (
  key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}log_head (
  id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, recorded_at TEXT);
INSERT INTO {s}log_head (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}log_entries (
  position BIGINT PRIMARY KEY, kind TEXT NOT NULL, leaf_hash {blob} NOT NULL,
  entry {blob} NOT NULL, case_id TEXT, agency TEXT);
CREATE INDEX IF NOT EXISTS log_entries_case_kind ON {s}log_entries (case_id, kind);
CREATE TABLE IF NOT EXISTS {s}tree_nodes (
  level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL,
  PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS {s}events_index (
  event_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, position BIGINT NOT NULL,
  case_version INTEGER NOT NULL, fingerprint {blob} NOT NULL, extra TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}agencies (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, position BIGINT NOT NULL,
  removed_at TEXT);
CREATE TABLE IF NOT EXISTS {s}agency_keys (
  key_id TEXT PRIMARY KEY, agency TEXT NOT NULL, line TEXT NOT NULL,
  added_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE INDEX IF NOT EXISTS agency_keys_agency ON {s}agency_keys (agency);
CREATE TABLE IF NOT EXISTS {s}case_relations (
  case_id TEXT NOT NULL, agency TEXT NOT NULL, PRIMARY KEY (case_id, agency));
CREATE TABLE IF NOT EXISTS {s}receipt_codes (
  code_mac {blob} PRIMARY KEY, case_id TEXT NOT NULL, consent_id TEXT NOT NULL,
  kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS receipt_codes_case ON {s}receipt_codes (case_id);
CREATE TABLE IF NOT EXISTS {s}checkpoints (
  size BIGINT PRIMARY KEY, root {blob} NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}erasures (
  case_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, position BIGINT NOT NULL,
  erased_at TEXT NOT NULL, key_destroyed INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE TABLE IF NOT EXISTS {s}tokens (
  id TEXT PRIMARY KEY, hash {blob} NOT NULL UNIQUE, role TEXT NOT NULL, agency TEXT,
  label TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT, revoked_at TEXT)
"""

KEY_TABLE = """
CREATE TABLE IF NOT EXISTS {s}case_keys (
  case_id TEXT PRIMARY KEY, kek_id TEXT NOT NULL, wrapped {blob} NOT NULL,
  created_at TEXT NOT NULL, confirmed INTEGER NOT NULL DEFAULT 0)
"""


def as_conflict(exc: BaseException) -> ConflictError:
    return exc if isinstance(exc, ConflictError) else ConflictError("write conflict")


class SQLStore(SQLDialect, Store):
    """Ledger tables in SQL; `{s}` is the schema prefix, `?` the placeholder.

    `log_head` holds the log's size and its latest `recorded_at` (of the accepted commits
    that had one); its row is the log lock every append takes first.
    """

    # Appended to a SELECT that must lock the agency row it reads until commit (PostgreSQL's
    # READ COMMITTED would otherwise act on a row another transaction is changing); SQLite
    # serialises every writer with BEGIN IMMEDIATE and needs none.
    share_lock = ""

    def __init__(self) -> None:
        self._group: GroupCommit[Commit, list[int]] = GroupCommit(self.append_group)
        self.unforeseen_conflicts = 0  # groups the database refused after the checks passed

    # -- backend hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor in a write transaction that serialises log appends; commit on exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads."""

    @abstractmethod
    def _insert_stored_events(self, cur: Cursor, events: Sequence[StoredEvent]) -> None: ...

    @abstractmethod
    def _insert_snapshots(self, cur: Cursor, snapshots: Sequence[StoredEvent]) -> None: ...

    @abstractmethod
    def _is_conflict(self, exc: BaseException) -> bool: ...

    def _after_append(self, cur: Cursor) -> None:
        """Backend hook at the end of an append transaction (PostgreSQL notifies listeners)."""

    def _writes(self, cur: Cursor) -> AbstractContextManager[Cursor]:
        """Backend hook: a cursor for writes whose results nobody reads, inside the append's
        transaction; a backend may send them without waiting for each answer (PostgreSQL's
        pipeline mode). Errors are raised by the end of the block."""
        return nullcontext(cur)

    @abstractmethod
    def _case_versions(self, cur: Cursor, case_ids: Sequence[str]) -> dict[str, int]:
        """The latest stored version of each case that has events, keyed by `str(UUID)`,
        inside the transaction."""

    @abstractmethod
    def _stored_versions(
        self, cur: Cursor, pairs: Sequence[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Those of the (case, version) pairs that have a stored event."""

    def _present(
        self, cur: Cursor, table: str, column: str, values: Sequence[str], where: str = ""
    ) -> set[str]:
        """Those of `values` found in `table.column` (rows also meeting `where`), in chunks."""
        found: set[str] = set()
        for chunk, in_list in in_lists(values):
            cur.execute(
                self.sql(
                    f"SELECT {column} FROM {{s}}{table}"  # noqa: S608
                    f" WHERE {where} {column} IN {in_list}"
                ),
                chunk,
            )
            found.update(str(r[column]) for r in cur.fetchall())
        return found

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

    def append(self, commit: Commit) -> list[int]:
        """Append in a group commit with whatever else this process is appending."""
        try:
            return self._group.submit(commit)
        except ConflictError:
            raise
        except Exception as exc:
            if self._is_conflict(exc):
                raise ConflictError("write conflict") from exc
            raise

    def append_group(self, commits: Sequence[Commit]) -> list[list[int] | ConflictError]:
        """One transaction for all the commits, each accepted or refused (ConflictError) on
        its own, in order, with exactly the answers they would have had one after another. Any
        other error aborts the whole transaction.

        Commits of events only (the ingest path) are checked together and written with one
        statement per table (`_append_set`); should a conflict the checks did not foresee
        still reach the database, or a commit touch the registry, the commits go one by one,
        each in a savepoint of its own (`_append_each`)."""
        if len(commits) == 1:  # no savepoint needed: the transaction is the commit
            try:
                with self._write() as cur:
                    return [self._append(cur, commits[0], notify=True)]
            except Exception as exc:
                if self._conflicting(exc):
                    return [as_conflict(exc)]
                raise
        if all(_events_only(c) for c in commits):
            try:
                return self._append_set(commits)
            except Exception as exc:
                if not self._conflicting(exc):
                    raise  # rolled back as a whole; else: one by one below
                self.unforeseen_conflicts += 1  # a gap in `_refusal`: worth a look
                log.warning(
                    "a group's checks missed a conflict (%s); committing one by one",
                    type(exc).__name__,
                )
        return self._append_each(commits)

    def _append_set(self, commits: Sequence[Commit]) -> list[list[int] | ConflictError]:
        """Every condition `_append` checks, checked for all the commits at once under the
        log lock and then replayed in order in memory (a commit sees the versions, event ids
        and latest time of the accepted commits before it); the accepted ones are written
        together. Events-only commits change no agency or key, so the live agencies and keys
        read once hold for the whole group."""
        outcomes: list[list[int] | ConflictError] = []
        with self._write() as cur:
            cur.execute(
                self.sql(
                    "UPDATE {s}log_head SET size = size WHERE id = 1 RETURNING size, recorded_at"
                )
            )
            head = cur.fetchone()  # locked: appends wait for this commit
            size = start = int(head["size"])
            latest: str | None = head["recorded_at"]
            cases = {_case(c.case_version[0]) for c in commits if c.case_version is not None}
            cases.update(_case(e.originator_id) for c in commits for e in c.stored_events)
            versions = self._case_versions(cur, sorted(cases))
            pairs = {
                (_case(e.originator_id), e.originator_version)
                for c in commits
                for e in c.stored_events
            }
            stored = self._stored_versions(cur, sorted(pairs))
            signing_keys = sorted({c.signing_key for c in commits if c.signing_key})
            live_keys = self._present(
                cur, "agency_keys", "key_id", signing_keys, "revoked_at IS NULL AND"
            )
            named = sorted({a for c in commits for a in c.named_agencies})
            live = self._live_agencies(cur, named)
            event_ids = [ev.event_id for c in commits for ev in c.events]
            taken = self._present(cur, "events_index", "event_id", event_ids)
            refused_cases: set[str] = set()
            accepted: list[tuple[Commit, list[int]]] = []
            for commit in commits:
                expected = commit.case_version
                refusal = _refusal(
                    commit, latest, versions, stored, live_keys, live, taken, refused_cases
                )
                if refusal is not None:
                    outcomes.append(refusal)
                    if expected is not None:
                        refused_cases.add(_case(expected[0]))
                    continue
                if commit.recorded_at is not None:  # not earlier than `latest`: checked
                    latest = commit.recorded_at
                for event in commit.stored_events:
                    case = _case(event.originator_id)
                    versions[case] = max(versions.get(case, 0), event.originator_version)
                    stored.add((case, event.originator_version))
                taken.update(ev.event_id for ev in commit.events)
                positions = list(range(size, size + len(commit.entries)))
                size += len(commit.entries)
                accepted.append((commit, positions))
                outcomes.append(positions)
            if not accepted:
                return outcomes
            leaves = [e.leaf_hash for c, _ in accepted for e in c.entries]
            nodes = merkle.nodes_to_store(start, leaves, _CursorNodes(self, cur))
            with self._writes(cur) as w:
                self._write_appended(w, accepted, nodes)
                w.execute(
                    self.sql("UPDATE {s}log_head SET size = ?, recorded_at = ? WHERE id = 1"),
                    (size, latest),
                )
                self._after_append(w)
        return outcomes

    def _append_each(self, commits: Sequence[Commit]) -> list[list[int] | ConflictError]:
        outcomes: list[list[int] | ConflictError] = []
        refused_cases: set[str] = set()
        with self._write() as cur:
            for commit in commits:
                expected = commit.case_version
                if expected is not None and expected[0] in refused_cases:
                    # Decided on the state an earlier, refused commit of this case would have
                    # made: its expected version may since be someone else's event.
                    outcomes.append(ConflictError("an earlier commit of the case was refused"))
                    continue
                cur.execute("SAVEPOINT item")
                try:
                    outcomes.append(self._append(cur, commit))
                except Exception as exc:
                    if not self._conflicting(exc):
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT item")
                    outcomes.append(as_conflict(exc))
                    if expected is not None:
                        refused_cases.add(expected[0])
                cur.execute("RELEASE SAVEPOINT item")
            if any(isinstance(o, list) for o in outcomes):
                self._after_append(cur)
        return outcomes

    def _conflicting(self, exc: BaseException) -> bool:
        return isinstance(exc, ConflictError) or self._is_conflict(exc)

    def _append(self, cur: Cursor, commit: Commit, notify: bool = False) -> list[int]:
        n = len(commit.entries)
        if n == 0:
            if (
                commit.stored_events
                or commit.snapshots
                or commit.events
                or commit.agencies
                or commit.keys
                or commit.revocations
                or commit.erasures
            ):
                raise ValueError("index rows need the log entry they index")
            return []
        # 1. Reserve positions with the ledger's own counter (the row lock serialises appends),
        # and move the log's latest time to the commit's, unless the latest is later.
        if commit.recorded_at is None:
            cur.execute(
                self.sql("UPDATE {s}log_head SET size = size + ? WHERE id = 1 RETURNING size"),
                (n,),
            )
        else:
            cur.execute(
                self.sql(
                    "UPDATE {s}log_head SET size = size + ?, recorded_at = CASE"
                    " WHEN recorded_at > ? THEN recorded_at ELSE ? END"
                    " WHERE id = 1 RETURNING size, recorded_at"
                ),
                (n, commit.recorded_at, commit.recorded_at),
            )
        head = cur.fetchone()
        end = int(head["size"])
        start = end - n
        # 2. Conditions that must still hold now that appends are serialised.
        if commit.recorded_at is not None and head["recorded_at"] != commit.recorded_at:
            raise StaleTime(head["recorded_at"])  # the latest was later: it stayed
        if commit.case_version is not None:  # checked before this commit's own events go in
            case_id, version = commit.case_version
            if self._case_versions(cur, [case_id]).get(_case(case_id), 0) != version:
                raise ConflictError("the case changed")
        if commit.signing_key is not None:
            cur.execute(
                self.sql("SELECT revoked_at FROM {s}agency_keys WHERE key_id = ?"),
                (commit.signing_key,),
            )
            row = cur.fetchone()
            if row is None or row["revoked_at"] is not None:
                raise ConflictError("the signing key was revoked")
        if commit.named_agencies:
            gone = set(commit.named_agencies) - self._live_agencies(cur, commit.named_agencies)
            if gone:
                raise AgencyGone(sorted(gone))
        for revocation in commit.revocations:
            cur.execute(
                self.sql(
                    "UPDATE {s}agency_keys SET revoked_at = ?"
                    " WHERE key_id = ? AND revoked_at IS NULL RETURNING key_id"
                ),
                (start + revocation.entry, revocation.key_id),
            )
            if cur.fetchone() is None:
                raise ConflictError("the key is not current")
        # 3. The tree nodes the entries complete (reads the old tree's lone right edge).
        positions = list(range(start, end))
        leaves = [e.leaf_hash for e in commit.entries]
        nodes = merkle.nodes_to_store(start, leaves, _CursorNodes(self, cur))
        # 4. The writes; the unique indexes refuse a case version or event id already taken.
        with self._writes(cur) as w:
            self._write_appended(w, [(commit, positions)], nodes)
            if notify:
                self._after_append(w)
        return positions

    def _write_appended(
        self,
        w: Cursor,
        accepted: Sequence[tuple[Commit, list[int]]],
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        """Every row of the accepted commits (each with its positions), one statement per
        table; nothing here is read back, so a backend may pipeline it all (`_writes`)."""
        events = [e for c, _ in accepted for e in c.stored_events]
        if events:
            self._insert_stored_events(w, events)
        snapshots = [e for c, _ in accepted for e in c.snapshots]
        if snapshots:
            self._insert_snapshots(w, snapshots)
        w.executemany(
            self.sql(
                "INSERT INTO {s}log_entries (position, kind, leaf_hash, entry, case_id, agency)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            ),
            [
                (p, e.kind, e.leaf_hash, e.entry, e.case_id, e.agency)
                for c, ps in accepted
                for p, e in zip(ps, c.entries, strict=True)
            ],
        )
        if nodes:
            w.executemany(
                self.sql("INSERT INTO {s}tree_nodes (level, idx, hash) VALUES (?, ?, ?)"), nodes
            )
        rows: dict[str, list[tuple[Any, ...]]] = {
            "INSERT INTO {s}events_index"
            " (event_id, case_id, position, case_version, fingerprint, extra)"
            " VALUES (?, ?, ?, ?, ?, ?)": [
                (
                    ev.event_id,
                    ev.case_id,
                    ps[ev.entry],
                    ev.case_version,
                    ev.fingerprint,
                    json.dumps(ev.extra, sort_keys=True),
                )
                for c, ps in accepted
                for ev in c.events
            ],
            "INSERT INTO {s}case_relations (case_id, agency) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING": [pair for c, _ in accepted for pair in c.relations],
            "INSERT INTO {s}agencies (id, name, type, position) VALUES (?, ?, ?, ?)": [
                (ag.id, ag.name, ag.type, ps[0]) for c, ps in accepted for ag in c.agencies
            ],
            "INSERT INTO {s}agency_keys (key_id, agency, line, added_at, revoked_at)"
            " VALUES (?, ?, ?, ?, NULL)": [
                (k.key_id, k.agency, k.line, ps[k.entry]) for c, ps in accepted for k in c.keys
            ],
            "INSERT INTO {s}erasures (case_id, event_id, position, erased_at)"
            " VALUES (?, ?, ?, ?)": [
                (x.case_id, x.event_id, ps[x.entry], x.erased_at)
                for c, ps in accepted
                for x in c.erasures
            ],
        }
        for statement, values in rows.items():
            if values:
                w.executemany(self.sql(statement), values)

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

    # -- tokens ----------------------------------------------------------------------------------

    def add_token(self, token: Token, token_hash: bytes, created_at: str) -> bool:
        """One statement: the insert selects its row from the agency's, if that is still
        not removed, and (on PostgreSQL) locks it for share until commit, so it cannot
        interleave with `remove_agency`: a plain conditional insert under READ COMMITTED
        could read the agency as live while a removal is committing, and store its token
        after the removal's revocation."""
        with self._write() as cur:
            if token.agency is None:
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}tokens"
                        " (id, hash, role, agency, label, created_at, expires_at)"
                        " VALUES (?, ?, ?, NULL, ?, ?, ?) RETURNING id"
                    ),
                    (token.id, token_hash, token.role, token.label, created_at, token.expires_at),
                )
            else:
                cur.execute(
                    self.sql(
                        "INSERT INTO {s}tokens"  # noqa: S608
                        " (id, hash, role, agency, label, created_at, expires_at)"
                        " SELECT ?, ?, ?, a.id, ?, ?, ? FROM {s}agencies a"
                        " WHERE a.id = ? AND a.removed_at IS NULL"
                        + self.share_lock
                        + " RETURNING id"
                    ),
                    (
                        token.id,
                        token_hash,
                        token.role,
                        token.label,
                        created_at,
                        token.expires_at,
                        token.agency,
                    ),
                )
            return cur.fetchone() is not None

    def revoke_tokens(
        self, *, token_id: str | None = None, agency: str | None = None, at: str
    ) -> int:
        column, value = ("id", token_id) if token_id is not None else ("agency", agency)
        with self._write() as cur:
            return self._revoke_tokens(cur, column, value, at)

    def _revoke_tokens(self, cur: Cursor, column: str, value: str | None, at: str) -> int:
        cur.execute(
            self.sql(
                f"UPDATE {{s}}tokens SET revoked_at = ? WHERE {column} = ?"  # noqa: S608
                " AND revoked_at IS NULL RETURNING id"
            ),
            (at, value),
        )
        return len(cur.fetchall())

    _TOKENS_BY_HASH = (
        "SELECT hash, id, role, agency, label, expires_at, revoked_at FROM {s}tokens WHERE hash IN "
    )

    def token_by_hash(self, token_hash: bytes) -> Token | None:
        return self.tokens_by_hash([token_hash]).get(token_hash)

    def tokens_by_hash(self, token_hashes: Sequence[bytes]) -> dict[bytes, Token]:
        found: dict[bytes, Token] = {}
        with self._read() as cur:
            for chunk, in_list in in_lists(sorted(set(token_hashes))):
                cur.execute(self.sql(self._TOKENS_BY_HASH + in_list), chunk)
                for r in cur.fetchall():
                    found[bytes(r["hash"])] = Token(
                        r["id"],
                        r["role"],
                        r["agency"],
                        r["label"],
                        r["expires_at"],
                        r["revoked_at"] is not None,
                    )
        return found


def _case(case_id: Any) -> str:
    """A case id (str or UUID) in one form, to compare ids from envelopes and the store."""
    return str(case_id if isinstance(case_id, uuid.UUID) else uuid.UUID(case_id))


def _events_only(commit: Commit) -> bool:
    """A commit of log entries, events and their index rows, nothing of the registry."""
    return bool(commit.entries) and not (
        commit.agencies or commit.keys or commit.revocations or commit.erasures
    )


def _refusal(
    commit: Commit,
    latest: str | None,
    versions: dict[str, int],
    stored: set[tuple[str, int]],
    live_keys: set[str],
    live_agencies: set[str],
    taken: set[str],
    refused_cases: set[str],
) -> ConflictError | None:
    """The error `_append_each` would refuse the commit with now, given the state so far
    (None: it would not): a refused predecessor of its case, the log's latest time, the
    case's version, the signing key, the named agencies, and the unique indexes on (case,
    version) and on event ids, checked in the order `_append_each` meets them."""
    expected = commit.case_version
    case = None if expected is None else _case(expected[0])
    if case is not None and case in refused_cases:
        return ConflictError("an earlier commit of the case was refused")
    if commit.recorded_at is not None and latest is not None and commit.recorded_at < latest:
        return StaleTime(latest)
    if expected is not None and case is not None and versions.get(case, 0) != expected[1]:
        return ConflictError("the case changed")
    if commit.signing_key is not None and commit.signing_key not in live_keys:
        return ConflictError("the signing key was revoked")
    gone = set(commit.named_agencies) - live_agencies
    if gone:
        return AgencyGone(sorted(gone))
    pairs = [(_case(e.originator_id), e.originator_version) for e in commit.stored_events]
    ids = [ev.event_id for ev in commit.events]
    if stored.intersection(pairs) or len(set(pairs)) != len(pairs):
        return ConflictError("write conflict")
    if taken.intersection(ids) or len(set(ids)) != len(ids):
        return ConflictError("write conflict")
    return None


class _CursorNodes:
    """The merkle NodeReader over the open write transaction."""

    def __init__(self, store: SQLStore, cur: Cursor) -> None:
        self.store, self.cur = store, cur

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        return self.store._nodes(self.cur, keys)


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
