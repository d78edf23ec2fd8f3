"""The outbox's part of the storage contract: notices (written with their event, `append.py`),
the timers that make the time-based ones (a consent's expiry, a referral's due time), the
webhook endpoints agencies register, and what was delivered to each. Times the worker
schedules by are epoch milliseconds; the rest are the log's timestamps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NoticeRow:
    """A notice of the event at `Commit.entries[entry]`: who is told, of what."""

    agency: str
    kind: str
    case_id: str
    subject: str | None
    entry: int


@dataclass(frozen=True)
class StoredNotice:
    """A recorded notice: `seq` orders an agency's notices as they were committed."""

    seq: int
    agency: str
    kind: str
    case_id: str
    subject: str | None
    position: int  # of the event it is about
    created_at: str
    acknowledged: str | None = None  # the action of the agency's `notice.acknowledged`
    acknowledged_at: str | None = None


@dataclass(frozen=True)
class AckRow:
    """A `notice.acknowledged` (the event at `Commit.entries[entry]`), indexed so the
    notices it answers show it."""

    position: int  # of the withdrawal or erasure it answers
    agency: str
    kind: str
    action: str


@dataclass(frozen=True)
class TimerRow:
    """A time-based notice to make at `due_ms` (a consent's expiry, a referral's due time),
    about the event at `Commit.entries[entry]`."""

    kind: str
    case_id: str
    subject: str
    entry: int
    due_ms: int


@dataclass(frozen=True)
class Timer:
    kind: str
    case_id: str
    subject: str
    position: int
    due_ms: int


@dataclass(frozen=True)
class Webhook:
    """An agency's endpoint. `cursor`: the last notice `seq` delivered or dead-lettered;
    `attempts`, `next_ms`, `failing_since`, `last_error`: the notice after it, failing.
    Secrets are stored sealed (`services/webhooks.py`)."""

    id: str
    agency: str
    url: str
    secret: bytes
    old_secret: bytes | None  # the secret before a rotation, still signing until `old_until_ms`
    old_until_ms: int | None
    created_at: str
    cursor: int
    attempts: int = 0
    next_ms: int | None = None
    failing_since: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one notice at an endpoint, to record."""

    seq: int
    outcome: str  # delivered | dead
    attempts: int
    error: str | None
    at: str


@dataclass(frozen=True)
class Delivery:
    """A notice's outcome at one endpoint: `delivered`, or `dead` (retried for the whole
    period, then given up: the agency still reads it from `GET /v1/notices`)."""

    endpoint: str
    notice: StoredNotice
    outcome: str
    attempts: int
    at: str
    error: str | None


class OutboxStore(ABC):
    # notices
    @abstractmethod
    def notices(self, agency: str, after: int = 0, limit: int = 100) -> list[StoredNotice]:
        """An agency's notices with `seq` > `after`, in commit order (a reader that keeps the
        last `seq` it saw misses none: notices are inserted under the log's lock)."""

    @abstractmethod
    def case_notices(self, case_id: str) -> list[StoredNotice]:
        """Every notice about a case, in commit order."""

    @abstractmethod
    def was_told(self, case_id: str, position: int, agency: str, kind: str) -> bool:
        """Whether a notice of `kind` about the event at `position` of the case told `agency`."""

    @abstractmethod
    def last_notice_seq(self, agency: str) -> int:
        """The `seq` of the agency's newest notice (0: none)."""

    # timers
    @abstractmethod
    def due_timers(self, now_ms: int, limit: int = 100) -> list[Timer]:
        """Timers due by `now_ms`, the earliest first."""

    @abstractmethod
    def fire_timer(self, timer: Timer, notices: Sequence[NoticeRow], created_at: str) -> int:
        """In one transaction under the log's lock: record the notices (about the timer's
        event; a notice already recorded is left as it is: exactly once) and drop the timer.
        Returns how many notices were new."""

    # webhook endpoints
    @abstractmethod
    def add_webhook(self, hook: Webhook) -> None: ...

    @abstractmethod
    def webhook(self, hook_id: str) -> Webhook | None:
        """An endpoint not removed."""

    @abstractmethod
    def webhooks(self, agency: str) -> list[Webhook]:
        """An agency's endpoints not removed, oldest first."""

    @abstractmethod
    def remove_webhook(self, hook_id: str, at: str) -> bool: ...

    @abstractmethod
    def set_webhook_secret(
        self, hook_id: str, secret: bytes, old_secret: bytes | None, old_until_ms: int | None
    ) -> None: ...

    # delivery
    @abstractmethod
    def due_webhooks(self, now_ms: int, owner: str) -> list[Webhook]:
        """Endpoints with a notice after their cursor, not waiting out a retry, and not
        leased by another worker."""

    @abstractmethod
    def claim_webhook(self, hook_id: str, owner: str, now_ms: int, until_ms: int) -> bool:
        """Lease an endpoint to one worker until `until_ms` (its deliveries stay in order
        and one at a time across processes); False when another holds it."""

    @abstractmethod
    def release_webhook(self, hook_id: str, owner: str) -> None: ...

    @abstractmethod
    def record_deliveries(
        self, hook_id: str, owner: str, done: Sequence[Outcome], lease_until_ms: int
    ) -> bool:
        """Notices delivered or dead-lettered, in `seq` order, in one transaction: the
        cursor moves past the last and the lease is renewed (only while `owner` holds it;
        False otherwise, and nothing is written)."""

    @abstractmethod
    def record_failure(
        self, hook_id: str, owner: str, attempts: int, next_ms: int, error: str, since: str
    ) -> None:
        """The notice after the cursor failed again: retry at `next_ms`."""

    @abstractmethod
    def dead_letters(self, hook_id: str, limit: int = 100, after: int = 0) -> list[Delivery]:
        """The endpoint's dead letters after notice `seq` `after`, oldest first."""

    @abstractmethod
    def delivery_backlog(self) -> tuple[int, int, int]:
        """(notices not yet delivered to a live endpoint, counted once per endpoint;
        endpoints failing now; dead letters ever) over every agency: counts only."""

    @abstractmethod
    def case_deliveries(self, case_id: str) -> list[Delivery]:
        """Every delivery outcome of the case's notices."""
