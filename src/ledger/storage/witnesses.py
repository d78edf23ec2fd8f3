"""The witnesses' part of the storage contract: the cosignatures gathered on each checkpoint
(served appended to it), and each witness's status (the size it says it holds, the last
size it cosigned, its last failure) with the lease that lets one process at a time talk to
it. Written by `services.cosigning`, read by the log service and `ledger log status`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class WitnessStatus:
    witness: str  # the name in the ledger's witness list
    held: int | None  # the size it last said it holds (from a cosignature or a 409)
    cosigned_size: int | None
    cosigned_at: str | None
    attempted_at: str | None
    error: str | None  # why the last attempt gathered nothing (None after a cosignature)


class WitnessStore(ABC):
    @abstractmethod
    def add_cosignature(self, witness: str, size: int, line: str, at: str) -> None:
        """Keep a verified cosignature line on the checkpoint of `size` (a later one by the
        same witness replaces it) and record that the witness holds `size`."""

    @abstractmethod
    def cosignatures(self, size: int) -> list[str]:
        """The cosignature lines gathered on the checkpoint of `size`, by witness name."""

    @abstractmethod
    def witness_attempt(self, witness: str, at: str, held: int | None, error: str | None) -> None:
        """An attempt that gathered nothing: the size the witness answered it holds (a 409),
        if any, and why it failed, if it did."""

    @abstractmethod
    def witness_statuses(self) -> list[WitnessStatus]: ...

    @abstractmethod
    def claim_witness(self, witness: str, owner: str, now_ms: int, until_ms: int) -> bool:
        """Take or renew the lease on talking to `witness` until `until_ms`; False while
        another owner holds an unexpired one."""
