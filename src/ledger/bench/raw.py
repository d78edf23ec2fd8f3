"""The raw eventsourcing baseline `ledger bench` compares the ledger with: no signing, no
sealing, no gates, no log; one aggregate event per note."""

from __future__ import annotations

import uuid

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Note(Aggregate):
    @event("Written")
    def __init__(self, text: str) -> None:
        self.text = text


class Notes(Application[uuid.UUID]):
    name = "BenchNotes"
