"""The time the ledger records log entries at: its clock, never earlier than the log's latest.

Every log entry carries a `recorded_at`, and the log's times never go backwards (the store
refuses a commit with an earlier time, `StaleTime`; the audit fails a log where they do: it
is how a server would back-date a share before a withdrawal). A commit decided at 10.9 s can
meet one decided at 11.0 s that committed first, or another server whose clock runs ahead:
the refusal names the log's latest time, and every decision after it is made at that time or
later, so the retry cannot be refused for the same reason again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from ledger.contract.vocabulary import parse_timestamp


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class LogTime:
    """`now()`: the clock's reading, or the latest time the log is known to hold if later."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._floor: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        reading = self.clock()
        floor = self._floor
        return reading if floor is None or reading >= floor else floor

    def saw(self, latest: str) -> None:
        """The log holds `latest` (from a `StaleTime` refusal): decide at it or later."""
        moment = parse_timestamp(latest)
        with self._lock:
            if self._floor is None or moment > self._floor:
                self._floor = moment
