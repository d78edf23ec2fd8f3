"""The Case aggregate (eventsourcing): envelopes and ciphertext only, never unsealed data.

Each accepted event is one aggregate event holding a `record`: the envelope, its signature,
the sealed attrs and payload (base64 of the stored ciphertext), the submission fingerprint,
and who recorded it when. The cleartext `CaseState` the gates use is folded from the records.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import ApplicationRecorder

from ledger.gates import CaseState

Record = dict[str, Any]


class Case(Aggregate):
    """One survivor's case: a stream of signed, sealed records."""

    @classmethod
    def create_id(cls, record: Record) -> uuid.UUID:
        return uuid.UUID(record["envelope"]["case_id"])

    @event("Opened")
    def __init__(self, record: Record) -> None:
        self.records: list[Record] = []
        self.state = CaseState(case_id=record["envelope"]["case_id"])
        self._fold(record)

    @event("Appended")
    def append(self, record: Record) -> None:
        self._fold(record)

    def _fold(self, record: Record) -> None:
        self.records.append(record)
        self.state.apply(record["envelope"], record["actor"], record["recorded_at"])

    def record_at(self, version: int) -> Record:
        """The record that made case version `version` (1-based)."""
        return self.records[version - 1]


class Cases(Application[uuid.UUID]):
    """The eventsourcing application over the ledger's own recorder; no aggregate cache."""

    name = "Cases"
    is_snapshotting_enabled = False

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self._given_recorder = recorder
        super().__init__(
            env={
                "IS_SNAPSHOTTING_ENABLED": "no",
                "PERSISTENCE_MODULE": "eventsourcing.popo",
            }
        )

    def construct_recorder(self) -> ApplicationRecorder:
        return self._given_recorder

    def load(self, case_id: str) -> Case | None:
        try:
            case: Case = self.repository.get(uuid.UUID(case_id))
        except Exception as exc:  # AggregateNotFoundError
            if type(exc).__name__ == "AggregateNotFoundError":
                return None
            raise
        assert isinstance(case, Case)
        return case
