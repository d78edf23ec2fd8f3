"""The storage contract every backend implements (one contract test suite runs on each).

A `Store` holds the event store (eventsourcing's recorder), the global log with its tree
nodes, the event index, agencies, agency keys and tokens. `append` writes one `Commit` in one
transaction: stored events, their log entries at the next gapless positions (the ledger's own
counter under a lock, never a sequence), the tree nodes those entries complete, and the rows
that index them. A `KeyTable` (storage/keytable.py) holds wrapped case keys apart from all
of it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventsourcing.persistence import AggregateRecorder, ApplicationRecorder, StoredEvent

from ledger.log.store import StoredCheckpoint
from ledger.storage.outbox import AckRow, NoticeRow, OutboxStore, TimerRow
from ledger.storage.witnesses import WitnessStore

T = TypeVar("T")

_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@dataclass(frozen=True)
class NewEntry:
    """A log entry to append: its canonical bytes and what it may be looked up by."""

    kind: str  # event | registry | access
    entry: bytes
    leaf_hash: bytes
    case_id: str | None = None
    agency: str | None = None


@dataclass(frozen=True)
class EventRow:
    """Index row of an accepted event; `entry` is its position in `Commit.entries`."""

    event_id: str
    case_id: str
    case_version: int
    fingerprint: bytes
    entry: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgencyRow:
    id: str
    name: str
    type: str


@dataclass(frozen=True)
class KeyRow:
    """An agency key; `entry` is the position in `Commit.entries` of the registry entry."""

    key_id: str
    agency: str
    line: str
    entry: int


@dataclass(frozen=True)
class Revocation:
    """Revoke an agency key at the position of `Commit.entries[entry]`."""

    key_id: str
    entry: int


@dataclass(frozen=True)
class ErasureRow:
    """A case erased by `Commit.entries[entry]`."""

    case_id: str
    event_id: str
    entry: int
    erased_at: str


@dataclass(frozen=True)
class Erasure:
    case_id: str
    event_id: str
    position: int
    erased_at: str
    key_destroyed: bool
    receipt: str | None


@dataclass(frozen=True)
class Commit:
    stored_events: Sequence[StoredEvent] = ()
    entries: Sequence[NewEntry] = ()
    events: Sequence[EventRow] = ()
    agencies: Sequence[AgencyRow] = ()
    keys: Sequence[KeyRow] = ()
    revocations: Sequence[Revocation] = ()
    erasures: Sequence[ErasureRow] = ()
    notices: Sequence[NoticeRow] = ()  # the transactional outbox: with the event, or not at all
    timers: Sequence[TimerRow] = ()  # time-based notices to make later (`outbox.py`)
    acks: Sequence[AckRow] = ()  # the notices a `notice.acknowledged` answers
    snapshots: Sequence[StoredEvent] = ()
    # (case, agency) pairs the commit relates (an agency that appended to or is named in a
    # case): what `related` answers, so visibility is decided before a case is loaded.
    relations: Sequence[tuple[str, str]] = ()
    # Conditions checked under the log lock; a ConflictError if they no longer hold:
    # the case is at this version (before this commit's own events go in):
    case_version: tuple[str, int] | None = None
    signing_key: str | None = None  # this agency key is still unrevoked
    # The time the ledger decided the commit at (every entry's `recorded_at`), not earlier
    # than the log's latest (else `StaleTime`); None: not checked, and it leaves the latest.
    recorded_at: str | None = None
    # Agencies the commit names (recipients, `to`): each still live (else `AgencyGone`).
    named_agencies: Sequence[str] = ()

    def __post_init__(self) -> None:
        # The log's latest time is compared as a string: only the fixed-width form orders.
        if self.recorded_at is not None and not _TIMESTAMP.fullmatch(self.recorded_at):
            raise ValueError("recorded_at must be YYYY-MM-DDTHH:MM:SSZ")
        if isinstance(self.named_agencies, str):  # a str is a Sequence[str] of letters
            raise TypeError("named_agencies is a sequence of agency ids, not one id")


@dataclass(frozen=True)
class ReceiptCode:
    """A printed consent-receipt code, indexed by its keyed MAC: the case and consent it
    leads to, and whether it is the grant's or the withdrawal's."""

    code_mac: bytes
    case_id: str
    consent_id: str
    kind: str


@dataclass(frozen=True)
class RecordedEvent:
    event_id: str
    case_id: str
    position: int
    case_version: int
    fingerprint: bytes
    leaf_hash: bytes
    extra: dict[str, Any]


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    type: str
    position: int
    removed_at: str | None = None


@dataclass(frozen=True)
class AgencyKey:
    key_id: str
    agency: str
    line: str
    added_at: int
    revoked_at: int | None


@dataclass(frozen=True)
class Token:
    id: str
    role: str
    agency: str | None
    label: str
    expires_at: str | None
    revoked: bool
    created_at: str | None = None  # in `list_tokens` only
    revoked_at: str | None = None


class ConflictError(Exception):
    """A concurrent write took the same case version or event id: retry."""


class StaleTime(ConflictError):
    """The commit's `recorded_at` is earlier than the latest one in the log: another commit,
    decided later, committed first. Decide it again with a fresh clock reading, not earlier
    than `latest` (the log's times never go backwards; the audit fails a log where they do)."""

    def __init__(self, latest: str) -> None:
        super().__init__(latest)  # the constructor's arguments: copies keep `latest`
        self.latest = latest

    def __str__(self) -> str:
        return f"the log has entries recorded at {self.latest}, later than this commit's time"


class AgencyGone(ConflictError):
    """An agency the commit names is no longer live (removed, unregistered, or without an
    unrevoked key) since the commit was decided: decide it again (a recipient that is not
    live is refused, 422)."""

    def __init__(self, agencies: Sequence[str]) -> None:
        super().__init__(tuple(sorted(set(agencies))))
        self.agencies: frozenset[str] = frozenset(agencies)

    def __str__(self) -> str:
        return "an agency the commit names is no longer registered, or has no current key"


class Store(OutboxStore, WitnessStore):
    """Ledger storage on one backend."""

    recorder: ApplicationRecorder
    snapshots: AggregateRecorder  # case snapshots (eventsourcing), written with their event

    @abstractmethod
    def setup(self) -> None:
        """Create every table if missing (idempotent)."""

    @abstractmethod
    def close(self) -> None: ...

    # meta
    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Set a value once; an existing value is left as it is."""

    # log
    @abstractmethod
    def append(self, commit: Commit) -> list[int]:
        """Write the commit atomically; return the positions of its entries.

        Raises ConflictError when a stored event's version or an event id is already taken,
        or a condition of the commit no longer holds: `StaleTime` when its `recorded_at` is
        earlier than the log's latest, `AgencyGone` when an agency it names is no longer
        live. Concurrent appends may share one transaction (group commit); each is still
        all or nothing on its own.
        """

    @abstractmethod
    def append_group(self, commits: Sequence[Commit]) -> list[list[int] | ConflictError]:
        """Several commits in one transaction, in order, each appended or refused on its own:
        a refused commit leaves nothing behind and takes no position (nor moves the log's
        latest time); each is checked against the accepted commits before it."""

    @abstractmethod
    def log_size(self) -> int: ...

    @abstractmethod
    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Entries with start <= position < end, in order."""

    @abstractmethod
    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        """Hashes of complete subtrees (level, index); KeyError if one is missing."""

    @abstractmethod
    def entry_owner(self, position: int) -> tuple[str, str | None] | None:
        """(kind, agency) of the entry at a position, or None."""

    @abstractmethod
    def case_readers(self, case_id: str) -> set[str]:
        """Agencies with an access entry (an unsealed read) for a case."""

    # erasures
    @abstractmethod
    def erasure(self, case_id: str) -> Erasure | None: ...

    @abstractmethod
    def unfinished_erasures(self) -> list[Erasure]:
        """Erasures whose key is not yet destroyed or whose receipt is not yet written."""

    @abstractmethod
    def mark_key_destroyed(self, case_id: str) -> None: ...

    @abstractmethod
    def set_receipt(self, case_id: str, receipt: str, answer_extra: dict[str, Any]) -> str:
        """Keep the erasure receipt, and add it to the case.erased event's answer, unless the
        erasure has a receipt already; returns the receipt that is kept."""

    # receipt codes
    @abstractmethod
    def index_receipt_codes(self, rows: Sequence[ReceiptCode]) -> None:
        """Keep codes as they are printed (one already kept is left as it is)."""

    @abstractmethod
    def receipt_code(self, code_mac: bytes) -> ReceiptCode | None: ...

    @abstractmethod
    def drop_receipt_codes(self, case_id: str) -> None:
        """Erasure: the case's codes lead nowhere any more."""

    # checkpoints
    @abstractmethod
    def save_checkpoint(self, size: int, root: bytes, note: str, signed_at: str) -> None:
        """Keep a signed checkpoint (one per size; a second one for a size is ignored)."""

    @abstractmethod
    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    # events
    @abstractmethod
    def find_event(self, event_id: str) -> RecordedEvent | None: ...

    @abstractmethod
    def find_events(self, event_ids: Sequence[str]) -> dict[str, RecordedEvent]:
        """`find_event` of many: the recorded ones, by event id."""

    @abstractmethod
    def related(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (case, agency) pairs whose agency is related to the case: it appended
        to it or was named in it. One query; it reads the pairs asked for only, so a case
        that exists costs what one that does not costs (unrelated agencies cannot tell them
        apart by timing either)."""

    @abstractmethod
    def case_versions(self, case_ids: Sequence[str]) -> dict[str, int]:
        """The latest stored version of each of the cases that has events, by `str(UUID)`."""

    @abstractmethod
    def events_after(self, versions: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        """The stored events of each `(case, version)` pair's case after that version, by
        case and version (what brings cached cases up to date, in one query)."""

    # agencies and their keys
    @abstractmethod
    def agency(self, agency_id: str) -> Agency | None: ...

    @abstractmethod
    def agencies(self) -> list[Agency]:
        """Every agency ever registered (removed ones too), by id: the directory."""

    @abstractmethod
    def live_agencies(self, agency_ids: Sequence[str]) -> set[str]:
        """Those of the agencies that are registered, not removed and have an unrevoked key
        (in one query): what `Commit.named_agencies` must still be at commit."""

    @abstractmethod
    def agency_key(self, key_id: str) -> AgencyKey | None: ...

    @abstractmethod
    def agency_keys(self, agency: str) -> list[AgencyKey]:
        """Every key an agency ever had, oldest first."""

    # tokens
    @abstractmethod
    def add_token(self, token: Token, token_hash: bytes, created_at: str) -> bool:
        """Store a token, unless it has an agency that is not registered or is removed
        (False, nothing stored). Atomic against `remove_agency`: no token of an agency is
        stored after its removal, so none escapes its revocation."""

    @abstractmethod
    def token_by_hash(self, token_hash: bytes) -> Token | None: ...

    @abstractmethod
    def tokens_by_hash(self, token_hashes: Sequence[bytes]) -> dict[bytes, Token]:
        """`token_by_hash` of many, in one read: the known ones, by hash."""

    @abstractmethod
    def token(self, token_id: str) -> Token | None:
        """The token with this id (revoked or not), or None."""

    @abstractmethod
    def list_tokens(self, after: str | None, limit: int) -> list[Token]:
        """Up to `limit` tokens (revoked ones too) in id order, after the id `after`."""

    @abstractmethod
    def revoke_tokens(self, *, token_id: str | None = None, agency: str | None = None,
                      at: str) -> int:  # fmt: skip
        """Revoke one token, or every token of an agency; returns how many were revoked."""

    @abstractmethod
    def mark_agency_removed(self, agency: str, at: str) -> None:
        """Set an agency's removal time; its tokens stay as they are (see `remove_agency`)."""

    @abstractmethod
    def remove_agency(self, agency: str, at: str) -> int:
        """Mark an agency removed (an earlier removal time stays) and revoke every one of its
        tokens, in one transaction; returns how many tokens it revoked. KeyError if the
        agency is not registered."""


IN_LIST = 500  # values in one IN list (SQLite allows 32,766 parameters a statement)


def in_lists(values: Sequence[T], size: int = IN_LIST) -> Iterator[tuple[list[T], str]]:
    """`values` in chunks of `size`, each with its `(?, ?, ...)` list for `IN`."""
    for i in range(0, len(values), size):
        chunk = list(values[i : i + size])
        yield chunk, "(" + ", ".join(["?"] * len(chunk)) + ")"


class SQLDialect:
    """How a backend spells a statement: `{s}` is its schema prefix, `{blob}` its binary
    type and `?` its placeholder."""

    placeholder = "?"
    prefix = ""
    blob = "BLOB"
    serial = "INTEGER PRIMARY KEY"  # a key the database assigns, increasing

    def sql(self, statement: str) -> str:
        text = statement.replace("{s}", self.prefix).replace("{blob}", self.blob)
        text = text.replace("{serial}", self.serial)
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text


class ViewStore(SQLDialect, ABC):
    """Where read models live, apart from the ledger's tables, with eventsourcing tracking.

    `track` records a projection's position in the same transaction as its view update; a
    position that is not past the recorded one raises, so every entry is applied exactly once.
    """

    tracking: Any  # the backend's eventsourcing tracking recorder

    def setup(self, statements: Sequence[str]) -> None:
        """Create the tracking table and the read models' tables."""
        self.tracking.create_table()
        with self.transaction() as cur:
            for statement in statements:
                cur.execute(self.sql(statement))

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """A cursor in a write transaction; commit on exit."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Any]: ...

    def writes(self, cur: Any) -> AbstractContextManager[Any]:
        """A block of writes inside `transaction()` whose results nobody reads: a backend may
        send them without waiting for each answer (PostgreSQL's pipeline mode). Any error is
        raised by the end of the block. Nothing may be fetched inside it."""
        return nullcontext(cur)

    @abstractmethod
    def track(self, cur: Any, name: str, position: int) -> None:
        """Record that `name` has applied every entry before `position` (same transaction)."""

    @abstractmethod
    def position(self, name: str) -> int:
        """The next log position `name` has to apply."""

    @abstractmethod
    def position_in(self, cur: Any, name: str) -> int:
        """`position(name)` read inside the caller's write transaction, locking it there."""

    @abstractmethod
    def forget(self, cur: Any, name: str) -> None:
        """Set `name`'s tracked position back to 0 (a rebuild; also creates the row)."""

    @abstractmethod
    def start_tracking(self, cur: Any, name: str) -> None:
        """Create `name`'s tracking row at 0 if it has none; an existing one never moves."""

    @abstractmethod
    def wait_for_appends(self, timeout: float) -> None:
        """Block until the log may have grown, or `timeout` seconds pass."""
