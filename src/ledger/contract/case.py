"""The Case aggregate (eventsourcing): envelopes and ciphertext only, never unsealed data.

Each accepted event is one aggregate event holding a `record`: the envelope, its signature,
the sealed attrs and payload (base64 of the stored ciphertext), the submission fingerprint,
and who recorded it when. The aggregate itself keeps only the cleartext `CaseState` the gates
use, folded from the records' envelopes, so a snapshot of it is small and a case of any
length loads from its latest snapshot plus fewer than `SNAPSHOT_EVERY` events. The records
are read from the event store when a read needs them (`Cases.records`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from copy import deepcopy
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, Snapshot, event
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    EventStore,
    JSONTranscoder,
    StoredEvent,
    Transcoding,
)

from ledger.concurrency import KeyedLocks
from ledger.contract.gates import CaseState

Record = dict[str, Any]

SNAPSHOT_EVERY = 100  # case versions between snapshots: loading replays at most 99 events
CACHE_SIZE = 10_000  # cases kept in memory per process (least recently used go first)


class Case(Aggregate):
    """One survivor's case: a stream of signed, sealed records."""

    @classmethod
    def create_id(cls, record: Record) -> uuid.UUID:
        return uuid.UUID(record["envelope"]["case_id"])

    @event("Opened")
    def __init__(self, record: Record) -> None:
        self.state = CaseState(case_id=record["envelope"]["case_id"])
        self._fold(record)

    @event("Appended")
    def append(self, record: Record) -> None:
        self._fold(record)

    def _fold(self, record: Record) -> None:
        self.state.apply(record["envelope"], record["actor"], record["recorded_at"])


class CaseStateAsJSON(Transcoding):
    """Snapshots carry the gate state as plain JSON."""

    type = CaseState
    name = "case_state"

    def encode(self, obj: CaseState) -> dict[str, Any]:
        return obj.to_json()

    def decode(self, data: dict[str, Any]) -> CaseState:
        return CaseState.from_json(data)


class Cases(Application[uuid.UUID]):
    """The eventsourcing application over the ledger's own recorders."""

    name = "Cases"

    def __init__(
        self,
        recorder: ApplicationRecorder,
        snapshots: AggregateRecorder,
        events_after: Callable[[Sequence[tuple[str, int]]], list[StoredEvent]],
    ) -> None:
        self._given_recorder = recorder
        self._given_snapshots = snapshots
        self._events_after = events_after  # `Store.events_after`
        # eventsourcing fast-forwards a cached aggregate in place under its own lock but
        # copies it for the caller outside that lock: loads of one case take turns here.
        self._loading = KeyedLocks()
        super().__init__(
            env={
                "IS_SNAPSHOTTING_ENABLED": "yes",
                "PERSISTENCE_MODULE": "eventsourcing.popo",
                # The aggregate holds cleartext gate state only (no sealed or unsealed data),
                # so caching it is safe; each get reads the events stored since (fast-forward),
                # so every process sees what the others committed.
                "AGGREGATE_CACHE_MAXSIZE": str(CACHE_SIZE),
                "AGGREGATE_CACHE_FASTFORWARD": "yes",
            }
        )

    def construct_recorder(self) -> ApplicationRecorder:
        return self._given_recorder

    def construct_snapshot_store(self) -> EventStore[uuid.UUID]:
        return EventStore(mapper=self.mapper, recorder=self._given_snapshots)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(CaseStateAsJSON())

    def load(self, case_id: str) -> Case | None:
        try:
            with self._loading.held(case_id):
                case: Case = self.repository.get(uuid.UUID(case_id))
        except Exception as exc:  # AggregateNotFoundError
            if type(exc).__name__ == "AggregateNotFoundError":
                return None
            raise
        assert isinstance(case, Case)
        return case

    def load_many(self, versions: Mapping[str, int]) -> dict[str, Case | None]:
        """`load` of several cases, given their latest stored versions (`case_versions`):
        those this process has cached are brought up to that version together, with one
        query for all their new events (none when the cache is current); the others load
        one by one."""
        assert self.repository.cache is not None
        cached: dict[str, Case] = {}
        for case_id in versions:
            with suppress(KeyError):  # not cached in this process
                cached[case_id] = self.repository.cache.get(uuid.UUID(case_id))  # type: ignore[assignment]
        behind = [(c, case.version) for c, case in cached.items() if case.version < versions[c]]
        newer: defaultdict[str, list[StoredEvent]] = defaultdict(list)
        for stored in self._events_after(behind) if behind else ():
            newer[str(stored.originator_id)].append(stored)
        loaded: dict[str, Case | None] = {}
        for case_id in versions:
            if case_id not in cached:
                loaded[case_id] = self.load(case_id)
                continue
            # Fast-forward in place, as the repository does, under the lock its loads take;
            # events another load applied meanwhile are skipped (the versions are checked).
            with self._loading.held(case_id):
                case = cached[case_id]
                for stored in newer.get(case_id, ()):
                    if stored.originator_version > case.version:
                        self.mapper.to_domain_event(stored).mutate(case)  # type: ignore[attr-defined]
                loaded[case_id] = deepcopy(case)
        return loaded

    def remember(self, case: Case) -> None:
        """Cache a case just committed, at the version committed (as `Application.save`
        does), so this process's next load of it starts there; the caller no longer
        changes it."""
        assert self.repository.cache is not None
        with self._loading.held(str(case.id)):
            self.repository.cache.put(case.id, case)

    def stored_changes(self, case: Case) -> tuple[list[StoredEvent], list[StoredEvent]]:
        """The case's new events, and a snapshot when its version reaches the interval."""
        events = [self.mapper.to_stored_event(e) for e in case.collect_events()]
        snapshots = []
        if case.version % SNAPSHOT_EVERY == 0:
            snapshots = [self.mapper.to_stored_event(Snapshot.take(case))]
        return events, snapshots

    def records(self, case: Case) -> list[Record]:
        """Every record of the case up to the loaded version, in order."""
        events = self.events.get(case.id, lte=case.version)
        return [e.record for e in events]  # type: ignore[attr-defined]

    def records_after(self, versions: Sequence[tuple[str, int]]) -> dict[str, list[Record]]:
        """The records of each `(case, version)` pair's case after that version, in order,
        by case: one query for many cases, none of them loaded."""
        found: defaultdict[str, list[Record]] = defaultdict(list)
        for stored in self._events_after(versions) if versions else ():
            event = self.mapper.to_domain_event(stored)
            found[str(stored.originator_id)].append(event.record)  # type: ignore[attr-defined]
        return found

    def record_at(self, case: Case, version: int) -> Record:
        """The record that made case version `version` (1-based)."""
        (found,) = self.events.get(case.id, gt=version - 1, lte=version)
        return found.record  # type: ignore[attr-defined, no-any-return]
