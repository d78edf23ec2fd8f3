"""The storage contract (`ledger.storage.base`), one suite run on SQLite and on PostgreSQL.

Every test gets a fresh, set-up `Store` and `KeyTable` from `open_store(settings)`; the
`settings` fixture is parametrised over both backends.
"""

from __future__ import annotations

import hashlib
import random
import stat
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.log import merkle
from ledger.log.merkle import MemoryTree, MissingNodeError, leaf_hash
from ledger.settings import Settings
from ledger.storage import open_store
from ledger.storage.base import (
    Agency,
    AgencyKey,
    AgencyRow,
    Commit,
    ConflictError,
    EventRow,
    KeyRow,
    KeyTable,
    NewEntry,
    RecordedEvent,
    Revocation,
    Store,
    Token,
)

# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def opened(settings: Settings) -> Iterator[tuple[Store, KeyTable]]:
    store, table = open_store(settings)
    store.setup()
    table.setup()
    try:
        yield store, table
    finally:
        store.close()
        table.close()


@pytest.fixture
def store(opened: tuple[Store, KeyTable]) -> Store:
    return opened[0]


@pytest.fixture
def table(opened: tuple[Store, KeyTable]) -> KeyTable:
    return opened[1]


class StoreNodes:
    """merkle.NodeReader over `Store.tree_nodes` (KeyError becomes MissingNodeError)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            return self.store.tree_nodes(keys)
        except KeyError as exc:
            raise MissingNodeError(str(exc)) from None


def new_entry(data: bytes, kind: str = "event", **kw: Any) -> NewEntry:
    return NewEntry(kind, data, leaf_hash(data), **kw)


def entries_commit(datas: Sequence[bytes]) -> Commit:
    return Commit(entries=[new_entry(d) for d in datas])


def stored_event(originator_id: uuid.UUID, version: int = 1, state: bytes = b"{}") -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id, originator_version=version, topic="x", state=state
    )


def event_commit(
    originator_id: uuid.UUID, event_id: str, data: bytes, version: int = 1, state: bytes = b"{}"
) -> Commit:
    """One stored event, its log entry and its index row."""
    return Commit(
        stored_events=[stored_event(originator_id, version, state)],
        entries=[new_entry(data, case_id=str(originator_id))],
        events=[
            EventRow(
                event_id=event_id,
                case_id=str(originator_id),
                case_version=version,
                fingerprint=hashlib.sha256(data).digest(),
                entry=0,
            )
        ],
    )


def assert_log(store: Store, datas: Sequence[bytes]) -> None:
    """The log holds exactly `datas` and its stored nodes give MemoryTree's root."""
    n = len(datas)
    assert store.log_size() == n
    assert store.entries(0, n + 10) == list(enumerate(datas))
    expected = MemoryTree([leaf_hash(d) for d in datas]).root()
    assert merkle.root(n, StoreNodes(store)) == expected


def missing(store: Store, key: tuple[int, int]) -> bool:
    try:
        store.tree_nodes([key])
    except KeyError:
        return True
    return False


def row_values(row: Any) -> list[Any]:
    return list(row.values()) if isinstance(row, dict) else list(row)


# -- setup and meta ------------------------------------------------------------------------------


def test_setup_twice_is_harmless_and_keeps_existing_data(store: Store, table: KeyTable) -> None:
    store.setup()
    table.setup()
    assert store.log_size() == 0
    store.append(entries_commit([b"a", b"b"]))
    store.set_meta("origin", "ledger.test/log")
    assert table.insert("case-1", "kek-1", b"wrapped", "2026-01-01T00:00:00Z")
    store.setup()
    table.setup()
    assert_log(store, [b"a", b"b"])
    assert store.get_meta("origin") == "ledger.test/log"
    assert table.get("case-1") == ("kek-1", b"wrapped")


def test_meta_is_set_once_never_overwritten_and_missing_key_is_none(store: Store) -> None:
    assert store.get_meta("origin") is None
    store.set_meta("origin", "first")
    assert store.get_meta("origin") == "first"
    store.set_meta("origin", "second")
    assert store.get_meta("origin") == "first"
    assert store.get_meta("other") is None


# -- the log -------------------------------------------------------------------------------------


def test_append_returns_gapless_zero_based_positions_and_log_size_follows(store: Store) -> None:
    assert store.log_size() == 0
    assert store.append(entries_commit([b"e0"])) == [0]
    assert store.log_size() == 1
    assert store.append(entries_commit([b"e1", b"e2", b"e3"])) == [1, 2, 3]
    assert store.log_size() == 4
    assert store.append(Commit()) == []
    assert store.log_size() == 4
    assert store.append(entries_commit([b"e4", b"e5"])) == [4, 5]
    assert store.append(entries_commit([b"e6"])) == [6]
    assert store.log_size() == 7


def test_entries_returns_exactly_the_half_open_range_in_order_with_the_given_bytes(
    store: Store,
) -> None:
    datas = [f"entry {i} ".encode() + bytes([i, 0, 255]) for i in range(12)]
    store.append(entries_commit(datas[:5]))
    store.append(entries_commit(datas[5:6]))
    store.append(entries_commit(datas[6:]))
    for start, end in [(0, 12), (0, 1), (3, 7), (5, 6), (11, 12), (4, 4), (7, 3), (10, 99)]:
        assert store.entries(start, end) == [(p, datas[p]) for p in range(start, min(end, 12))]
    assert store.entries(12, 20) == []
    assert all(type(e) is bytes for _, e in store.entries(0, 12))


def test_stored_tree_nodes_match_memory_tree_for_sizes_1_to_40_in_uneven_batches(
    store: Store,
) -> None:
    batches = [1, 3, 1, 2, 5, 1, 8, 4, 7, 1, 2, 5]
    assert sum(batches) == 40
    datas: list[bytes] = []
    tree = MemoryTree()
    expected_nodes: dict[tuple[int, int], bytes] = {}
    reader = StoreNodes(store)
    for size in batches:
        batch = [f"leaf {len(datas) + i}".encode() for i in range(size)]
        start = len(datas)
        assert store.append(entries_commit(batch)) == list(range(start, start + size))
        datas.extend(batch)
        for level, index, h in tree.append([leaf_hash(d) for d in batch]):
            expected_nodes[(level, index)] = h
        assert merkle.root(len(datas), reader) == tree.root()
    # Every root of every earlier size, from the nodes stored along the way.
    for n in range(1, 41):
        assert merkle.root(n, reader) == MemoryTree([leaf_hash(d) for d in datas[:n]]).root()
    # The very nodes MemoryTree stores, with the same hashes.
    keys = sorted(expected_nodes)
    assert store.tree_nodes(keys) == [expected_nodes[k] for k in keys]
    assert_log(store, datas)


def test_tree_nodes_raises_key_error_for_a_node_not_stored(store: Store) -> None:
    store.append(entries_commit([b"a", b"b", b"c"]))
    assert store.tree_nodes([]) == []
    with pytest.raises(KeyError):
        store.tree_nodes([(1, 1)])  # leaves [2, 4) are not complete yet
    with pytest.raises(KeyError):
        store.tree_nodes([(0, 3)])


# -- events --------------------------------------------------------------------------------------


def test_append_with_stored_event_is_found_by_event_id_and_readable_from_recorder(
    store: Store,
) -> None:
    store.append(entries_commit([b"before 0", b"before 1"]))
    case = uuid.uuid4()
    access = new_entry(b"an access entry", kind="access")
    event_entry = new_entry(b"the event entry", case_id=str(case), agency="ngo-a")
    row = EventRow(
        event_id="ev-1",
        case_id=str(case),
        case_version=1,
        fingerprint=b"\x01" * 32,
        entry=1,
        extra={"type": "case.opened", "agency": "ngo-a", "n": 3},
    )
    positions = store.append(
        Commit(stored_events=[stored_event(case)], entries=[access, event_entry], events=[row])
    )
    assert positions == [2, 3]
    assert store.find_event("ev-1") == RecordedEvent(
        event_id="ev-1",
        case_id=str(case),
        position=3,
        case_version=1,
        fingerprint=b"\x01" * 32,
        leaf_hash=event_entry.leaf_hash,
        extra={"type": "case.opened", "agency": "ngo-a", "n": 3},
    )
    assert store.find_event("ev-unknown") is None
    (read,) = store.recorder.select_events(case)
    assert read.originator_id == case
    assert read.originator_version == 1
    assert read.topic == "x"
    assert bytes(read.state) == b"{}"
    assert_log(store, [b"before 0", b"before 1", b"an access entry", b"the event entry"])


def test_case_versions_and_events_after_give_each_cases_latest_and_later_events(
    store: Store,
) -> None:
    """What `Cases.load_many` fast-forwards cached cases with, in one query: exactly the
    events after each given version, ids as UUIDs, states as stored."""
    a, b, c = sorted((uuid.uuid4() for _ in range(3)), key=str)
    for case, versions in ((a, 4), (b, 2), (c, 3)):
        for v in range(1, versions + 1):
            data = f"{case} {v}".encode()
            store.append(event_commit(case, f"{case}-{v}", data, v, f'{{"v":{v}}}'.encode()))
    unknown = str(uuid.uuid4())
    assert store.case_versions([str(a), unknown, str(b), str(c)]) == {
        str(a): 4, str(b): 2, str(c): 3
    }  # fmt: skip
    assert store.case_versions([]) == {}
    found = store.events_after([(str(c), 1), (str(a), 2), (str(b), 2)])
    assert [(e.originator_id, e.originator_version) for e in found] == [
        (a, 3), (a, 4), (c, 2), (c, 3)
    ]  # fmt: skip
    assert all(isinstance(e.originator_id, uuid.UUID) for e in found)
    assert [bytes(e.state) for e in found] == [b'{"v":3}', b'{"v":4}', b'{"v":2}', b'{"v":3}']
    assert {e.topic for e in found} == {"x"}
    assert store.events_after([(str(a), 0)])[0].originator_version == 1
    assert store.events_after([(str(uuid.uuid4()), 0)]) == []
    assert store.events_after([]) == []
    many = [(str(uuid.uuid4()), 0) for _ in range(600)] + [(str(b), 1)]  # past one IN list
    assert [(e.originator_id, e.originator_version) for e in store.events_after(many)] == [(b, 2)]


def test_duplicate_case_version_raises_conflict_and_leaves_nothing_behind(store: Store) -> None:
    datas = [f"pre {i}".encode() for i in range(6)]
    store.append(entries_commit(datas))
    case = uuid.uuid4()
    store.append(event_commit(case, "ev-1", b"first", state=b'{"v":"first"}'))
    datas.append(b"first")
    assert store.log_size() == 7
    # Appending leaf 7 would complete (0,7), (1,3), (2,1) and (3,0).
    would_complete = [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert all(missing(store, key) for key in would_complete)

    with pytest.raises(ConflictError):
        store.append(event_commit(case, "ev-2", b"second", state=b'{"v":"second"}'))

    assert store.log_size() == 7
    assert store.entries(7, 20) == []
    assert store.find_event("ev-2") is None
    assert all(missing(store, key) for key in would_complete)
    (read,) = store.recorder.select_events(case)
    assert bytes(read.state) == b'{"v":"first"}'
    assert store.find_event("ev-1") is not None
    assert store.find_event("ev-1").position == 6  # type: ignore[union-attr]

    # The next append takes the next gapless position and the tree is still right.
    assert store.append(event_commit(case, "ev-3", b"third", version=2)) == [7]
    datas.append(b"third")
    assert_log(store, datas)
    assert store.find_event("ev-3").position == 7  # type: ignore[union-attr]
    assert [e.originator_version for e in store.recorder.select_events(case)] == [1, 2]


def test_duplicate_event_id_raises_conflict_and_leaves_nothing_behind(store: Store) -> None:
    datas = [f"pre {i}".encode() for i in range(2)]
    store.append(entries_commit(datas))
    first_case = uuid.uuid4()
    store.append(event_commit(first_case, "ev-1", b"first"))
    datas.append(b"first")
    assert store.log_size() == 3
    would_complete = [(0, 3), (1, 1), (2, 0)]
    assert all(missing(store, key) for key in would_complete)

    other_case = uuid.uuid4()
    with pytest.raises(ConflictError):
        store.append(event_commit(other_case, "ev-1", b"other"))

    assert store.log_size() == 3
    assert store.entries(3, 10) == []
    assert all(missing(store, key) for key in would_complete)
    assert store.recorder.select_events(other_case) == []
    found = store.find_event("ev-1")
    assert found is not None
    assert (found.case_id, found.position, found.leaf_hash) == (
        str(first_case),
        2,
        leaf_hash(b"first"),
    )

    assert store.append(event_commit(other_case, "ev-2", b"other")) == [3]
    datas.append(b"other")
    assert_log(store, datas)


def test_concurrent_appends_from_8_threads_get_distinct_gapless_positions(store: Store) -> None:
    threads_n, per_thread = 8, 25
    barrier = threading.Barrier(threads_n)
    got: dict[int, list[tuple[int, bytes]]] = {t: [] for t in range(threads_n)}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                data = f"thread {t} commit {i}".encode()
                (position,) = store.append(entries_commit([data]))
                got[t].append((position, data))
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert errors == []

    total = threads_n * per_thread
    appended = [pair for pairs in got.values() for pair in pairs]
    assert sorted(p for p, _ in appended) == list(range(total))
    for pairs in got.values():  # each thread's positions grow with its commits
        assert [p for p, _ in pairs] == sorted(p for p, _ in pairs)
    read = store.entries(0, total)
    assert read == sorted(appended)
    assert store.log_size() == total
    expected = MemoryTree([leaf_hash(e) for _, e in read]).root()
    assert merkle.root(total, StoreNodes(store)) == expected


def test_a_group_appends_each_commit_or_refuses_it_alone_without_a_gap(store: Store) -> None:
    case = uuid.uuid4()
    store.append(event_commit(case, "ev-1", b"first"))
    outcomes = store.append_group(
        [
            entries_commit([b"a"]),
            event_commit(case, "ev-2", b"same case version again"),  # version 1 is taken
            event_commit(uuid.uuid4(), "ev-1", b"same event id again"),
            entries_commit([b"b", b"c"]),
            event_commit(case, "ev-3", b"next version", version=2),
        ]
    )
    assert outcomes[0] == [1]
    assert isinstance(outcomes[1], ConflictError)
    assert isinstance(outcomes[2], ConflictError)
    assert outcomes[3] == [2, 3]
    assert outcomes[4] == [4]
    assert_log(store, [b"first", b"a", b"b", b"c", b"next version"])
    assert store.find_event("ev-2") is None
    assert [e.originator_version for e in store.recorder.select_events(case)] == [1, 2]
    # A group of one reports its conflict the same way.
    (alone,) = store.append_group([event_commit(case, "ev-4", b"stale", version=2)])
    assert isinstance(alone, ConflictError)
    assert store.log_size() == 5


def test_in_a_group_a_refused_commit_refuses_the_later_commits_of_its_case(store: Store) -> None:
    """Within a batch, later items of a case were decided on the state the refused one would
    have made; the version they expect may since be someone else's event, so it cannot vouch
    for them."""
    from dataclasses import replace

    case, other = uuid.uuid4(), uuid.uuid4()
    store.append(event_commit(case, "ev-1", b"first"))  # the case is at version 1
    stale = replace(event_commit(case, "ev-2", b"stale", version=2), case_version=(str(case), 0))
    after = replace(event_commit(case, "ev-3", b"after", version=2), case_version=(str(case), 1))
    elsewhere = replace(event_commit(other, "ev-4", b"elsewhere"), case_version=(str(other), 0))
    outcomes = store.append_group([stale, after, elsewhere])
    assert isinstance(outcomes[0], ConflictError)
    assert isinstance(outcomes[1], ConflictError)  # its own condition holds, but it follows one
    assert outcomes[2] == [1]
    assert_log(store, [b"first", b"elsewhere"])


def test_a_group_of_event_commits_answers_exactly_as_the_commits_one_by_one(
    store: Store, backend: str, tmp_path: Path
) -> None:
    """A group of event commits is checked together and written with one statement per
    table; the answers, the log, the tree, the index and the case streams must be exactly
    what the same commits give one by one (each in its savepoint), over random groups full
    of stale versions, repeated event ids, revoked keys and refused predecessors."""
    from dataclasses import replace

    from tests.conftest import deployment

    rng = random.Random(6)  # noqa: S311
    cases = [uuid.uuid4() for _ in range(4)]
    keys = ["key-a", "key-b", "key-c"]
    with deployment(backend, tmp_path / "one-by-one") as other_settings:
        other, other_table = open_store(other_settings)
        other.setup()
        try:
            for s in (store, other):
                s.append(registry_commit("ngo-a", "key-a"))
                for key_id in keys[1:]:
                    s.append(
                        Commit(
                            entries=[new_entry(f"add {key_id}".encode(), kind="registry")],
                            keys=[KeyRow(key_id, "ngo-a", f"line {key_id}", 0)],
                        )
                    )
            serial, known = 0, dict.fromkeys(cases, 0)  # the versions accepted so far
            for round_ in range(40):
                group: list[Commit] = []
                for _ in range(rng.randint(2, 7)):
                    serial += 1
                    if rng.random() < 0.03:
                        victim = rng.choice(keys)  # a revocation: the group goes one by one
                        group.append(
                            Commit(
                                entries=[new_entry(f"revoke {serial}".encode(), kind="registry")],
                                revocations=[Revocation(victim, 0)],
                            )
                        )
                        continue
                    case = rng.choice(cases)
                    fresh, draw = known[case] + 1, rng.random()
                    # Mostly the next version; else one ahead (a gap) or a stale one.
                    version = (
                        fresh if draw < 0.6 else fresh + 1 if draw < 0.8 else rng.randint(1, fresh)
                    )
                    reused = rng.random() < 0.1  # an event id recorded or in this group
                    event_id = f"ev-{rng.randint(1, serial) if reused else serial}"
                    commit = event_commit(case, event_id, f"entry {serial}".encode(), version)
                    if rng.random() < 0.6:
                        commit = replace(commit, case_version=(str(case), version - 1))
                    if rng.random() < 0.7:
                        commit = replace(commit, signing_key=rng.choice(keys))
                    group.append(commit)
                together = store.append_group(group)
                one_by_one = other._append_each(group)  # type: ignore[attr-defined]
                assert [o if isinstance(o, list) else "refused" for o in together] == [
                    o if isinstance(o, list) else "refused" for o in one_by_one
                ], f"round {round_}"
                # Every conflict was foreseen by the group's checks, none left to the database.
                assert store.unforeseen_conflicts == 0  # type: ignore[attr-defined]
                for commit, outcome in zip(group, together, strict=True):
                    if isinstance(outcome, list):
                        for event in commit.stored_events:
                            known[event.originator_id] = max(
                                known[event.originator_id], event.originator_version
                            )
            size = store.log_size()
            assert size == other.log_size() and size > 60, size
            assert store.entries(0, size) == other.entries(0, size)
            assert merkle.root(size, StoreNodes(store)) == merkle.root(size, StoreNodes(other))
            for n in range(serial + 1):
                assert store.find_event(f"ev-{n}") == other.find_event(f"ev-{n}")
            for case in cases:
                mine = [(e.originator_version, e.state) for e in store.recorder.select_events(case)]
                theirs = [
                    (e.originator_version, e.state) for e in other.recorder.select_events(case)
                ]
                assert mine == theirs
        finally:
            other.close()
            other_table.close()


def test_the_first_erasure_receipt_stored_is_kept(store: Store) -> None:
    """Two finishers of one erasure (its request and the recoverer) may both sign a receipt:
    the first stored stands, and the second is told which one that is."""
    from ledger.storage.base import ErasureRow

    case = uuid.uuid4()
    store.append(event_commit(case, "ev-1", b"opened"))
    erased = Commit(
        entries=[new_entry(b"erased", case_id=str(case))],
        erasures=[ErasureRow(str(case), "ev-erase", 0, "2026-11-29T08:00:00Z")],
    )
    store.append(erased)
    assert store.set_receipt(str(case), "first", {"receipt": "first"}) == "first"
    assert store.set_receipt(str(case), "second", {"receipt": "second"}) == "first"
    erasure = store.erasure(str(case))
    assert erasure is not None and erasure.receipt == "first"
    with pytest.raises(KeyError):
        store.set_receipt(str(uuid.uuid4()), "third", {})


# -- agencies and keys ---------------------------------------------------------------------------


def registry_commit(agency_id: str, key_id: str, name: str = "NGO A") -> Commit:
    data = f"registry {agency_id} {key_id}".encode()
    return Commit(
        entries=[new_entry(data, kind="registry", agency=agency_id)],
        agencies=[AgencyRow(agency_id, name, "ngo")],
        keys=[KeyRow(key_id, agency_id, f"{agency_id} line {key_id}", 0)],
    )


def test_agency_and_key_commit_is_readable_at_the_registry_entry_position(store: Store) -> None:
    store.append(entries_commit([b"a", b"b", b"c"]))
    assert store.agency("ngo-a") is None
    assert store.agency_key("ngo-a+k1") is None
    assert store.append(registry_commit("ngo-a", "ngo-a+k1")) == [3]
    assert store.agency("ngo-a") == Agency("ngo-a", "NGO A", "ngo", 3)
    assert store.agency_key("ngo-a+k1") == AgencyKey(
        "ngo-a+k1", "ngo-a", "ngo-a line ngo-a+k1", 3, None
    )
    # A key whose registry entry is not the commit's first entry gets that entry's position.
    positions = store.append(
        Commit(
            entries=[new_entry(b"x"), new_entry(b"registry k2", kind="registry", agency="ngo-a")],
            keys=[KeyRow("ngo-a+k2", "ngo-a", "line 2", 1)],
        )
    )
    assert positions == [4, 5]
    assert store.agency_key("ngo-a+k2") == AgencyKey("ngo-a+k2", "ngo-a", "line 2", 5, None)
    assert store.log_size() == 6


def test_duplicate_agency_id_raises_conflict_and_leaves_nothing_behind(store: Store) -> None:
    store.append(registry_commit("ngo-a", "ngo-a+k1"))
    with pytest.raises(ConflictError):
        store.append(registry_commit("ngo-a", "ngo-a+k9", name="Impostor"))
    assert store.agency("ngo-a") == Agency("ngo-a", "NGO A", "ngo", 0)
    assert store.agency_key("ngo-a+k9") is None
    assert store.log_size() == 1
    assert missing(store, (0, 1))
    assert store.append(registry_commit("ngo-b", "ngo-b+k1")) == [1]
    assert store.agency("ngo-b") == Agency("ngo-b", "NGO A", "ngo", 1)
    assert_log(store, [b"registry ngo-a ngo-a+k1", b"registry ngo-b ngo-b+k1"])


# -- tokens --------------------------------------------------------------------------------------


def test_token_is_found_by_its_hash_only_and_the_raw_token_is_not_stored(store: Store) -> None:
    raw = "lgr_" + uuid.uuid4().hex + uuid.uuid4().hex
    token_hash = hashlib.sha256(raw.encode()).digest()
    token = Token("tok_1", "caseworker", "ngo-a", "Ana, caseworker", "2027-01-01T00:00:00Z", False)
    store.add_token(token, token_hash, "2026-01-01T00:00:00Z")
    admin = Token("tok_2", "admin", None, "admin", None, False)
    store.add_token(admin, hashlib.sha256(b"admin secret").digest(), "2026-01-01T00:00:00Z")

    assert store.token_by_hash(token_hash) == token
    assert store.token_by_hash(hashlib.sha256(b"admin secret").digest()) == admin
    assert store.token_by_hash(hashlib.sha256(b"unknown").digest()) is None
    assert store.token_by_hash(raw.encode()) is None
    admin_hash = hashlib.sha256(b"admin secret").digest()
    unknown = hashlib.sha256(b"unknown").digest()
    assert store.tokens_by_hash([unknown, admin_hash, token_hash, admin_hash]) == {
        token_hash: token,
        admin_hash: admin,
    }
    assert store.tokens_by_hash([]) == {}

    # What is stored is the hash given, never the raw token.
    with store._read() as cur:  # type: ignore[attr-defined]
        cur.execute(store.sql("SELECT * FROM {s}tokens"))  # type: ignore[attr-defined]
        rows = [row_values(r) for r in cur.fetchall()]
    assert len(rows) == 2
    for value in (v for row in rows for v in row):
        if isinstance(value, str):
            assert raw not in value
        elif isinstance(value, bytes | bytearray | memoryview):
            assert raw.encode() not in bytes(value)
    assert any(
        bytes(v) == token_hash
        for row in rows
        for v in row
        if isinstance(v, bytes | bytearray | memoryview)
    )


# -- the key table -------------------------------------------------------------------------------


def test_key_table_inserts_once_gets_and_deletes_idempotently(table: KeyTable) -> None:
    assert table.get("case-1") is None
    assert table.insert("case-1", "kek-1", b"\x00wrapped\xff", "2026-01-01T00:00:00Z") is True
    assert table.insert("case-1", "kek-2", b"other", "2026-01-01T00:00:00Z") is False
    assert table.get("case-1") == ("kek-1", b"\x00wrapped\xff")
    assert table.insert("case-2", "kek-1", b"second", "2026-01-01T00:00:00Z") is True
    table.delete("case-1")
    assert table.get("case-1") is None
    table.delete("case-1")
    table.delete("never-there")
    assert table.get("case-1") is None
    assert table.get("case-2") == ("kek-1", b"second")


def test_sqlite_key_table_is_a_separate_file_with_mode_0600(
    backend: str, store: Store, table: KeyTable
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite only: the key table lives in its own file")
    ledger_path = store.path  # type: ignore[attr-defined]
    keys_path = table.path  # type: ignore[attr-defined]
    assert keys_path.exists()
    assert ledger_path.exists()
    assert keys_path.resolve() != ledger_path.resolve()
    assert not keys_path.samefile(ledger_path)
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    table.insert("case-1", "kek-1", b"wrapped", "2026-01-01T00:00:00Z")
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
