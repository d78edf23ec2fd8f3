"""The append engine both SQL backends share: commits appended to the log in group
commits, each checked under the log lock (recorded_at, case versions, signing keys, named
agencies, event ids) and written with the tree nodes it completes."""

from __future__ import annotations

import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from eventsourcing.persistence import StoredEvent

from ledger.concurrency import GroupCommit
from ledger.log import merkle
from ledger.storage.base import AgencyGone, Commit, ConflictError, StaleTime, in_lists
from ledger.storage.schema import Cursor
from ledger.storage.tables import SQLTables

log = logging.getLogger("ledger.storage")


def as_conflict(exc: BaseException) -> ConflictError:
    return exc if isinstance(exc, ConflictError) else ConflictError("write conflict")


class SQLAppendEngine(SQLTables):
    """The log's appends over the ledger tables (`SQLTables`).

    `log_head` holds the log's size and its latest `recorded_at` (of the accepted commits
    that had one); its row is the log lock every append takes first.
    """

    def __init__(self) -> None:
        self._group: GroupCommit[Commit, list[int]] = GroupCommit(self.append_group)
        self.unforeseen_conflicts = 0  # groups the database refused after the checks passed

    # -- backend hooks ---------------------------------------------------------------------------

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
                or commit.notices
                or commit.timers
                or commit.acks
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
            # In log order, under the log's lock: `seq` follows the commit order.
            "INSERT INTO {s}notices (agency, kind, case_id, subject, position, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)": [
                (n.agency, n.kind, n.case_id, n.subject, ps[n.entry], c.recorded_at or "")
                for c, ps in accepted
                for n in c.notices
            ],
            "INSERT INTO {s}acknowledgements (position, agency, kind, action, at)"
            " VALUES (?, ?, ?, ?, ?)": [
                (a.position, a.agency, a.kind, a.action, c.recorded_at or "")
                for c, _ in accepted
                for a in c.acks
            ],
            "INSERT INTO {s}timers (kind, case_id, subject, position, due_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING": [
                (t.kind, t.case_id, t.subject, ps[t.entry], t.due_ms)
                for c, ps in accepted
                for t in c.timers
            ],
        }
        for statement, values in rows.items():
            if values:
                w.executemany(self.sql(statement), values)


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

    def __init__(self, store: SQLAppendEngine, cur: Cursor) -> None:
        self.store, self.cur = store, cur

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        return self.store._nodes(self.cur, keys)
