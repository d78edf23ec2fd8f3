"""What a crash leaves behind must not block the retry: a process killed after it stored a new
case's key but before its commit leaves the key unconfirmed."""

from __future__ import annotations

import uuid

from tests.conftest import OPENED_ATTRS, World


def test_case_opened_retried_after_a_crash_between_key_and_commit_is_accepted(
    world: World,
) -> None:
    """A process killed after it stored a new case's key but before its commit leaves the key
    unconfirmed; the client's identical retry must be recorded, not refused as a conflict
    until the next start 15 minutes later."""
    ngo = world.agency("ngo-a")
    case_id = str(uuid.uuid4())
    body = ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"notes": "n"})
    world.ledger.keys.create(case_id)  # what the killed process left
    first = ngo.post(body)
    assert first.status_code == 201, first.text
    assert ngo.read(case_id).json()["payload"] == {"notes": "n"}  # sealed with the stored key
    again = ngo.post(body)
    assert again.status_code == 200 and again.json() == first.json()


def test_recover_never_deletes_a_leftover_key_that_a_new_case_took_over(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = str(uuid.uuid4())
    world.ledger.keys.create(case_id)
    (_, wrapped), *_ = [
        (c, w) for c, w in world.ledger.keys.table.unconfirmed("9999") if c == case_id
    ]
    world.ledger.keys.create(case_id)  # a retry took it over (re-wrapped it) ...
    assert not world.ledger.keys.discard_unconfirmed(case_id, wrapped)  # ... a stale look fails
    body = ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"notes": "n"})
    assert ngo.post(body).status_code == 201
    world.clock.advance(hours=1)
    assert world.ledger.recover() == 0  # committed: confirmed, kept
    assert ngo.read(case_id).status_code == 200
    orphan = str(uuid.uuid4())
    world.ledger.keys.create(orphan)
    world.clock.advance(hours=1)
    assert world.ledger.recover() == 1 and world.ledger.keys.get(orphan) is None


def test_two_submissions_opening_one_case_at_once_leave_it_readable(world: World) -> None:
    """Both may share the new case's key; one commits, the other is refused, and the key that
    stays is the one the committed case was sealed with."""
    import json
    import threading

    from ledger.errors import Conflict

    ngo = world.agency("ngo-a")
    principal = world.ledger.authenticate(ngo.auth()["Authorization"].split()[1])
    for n in range(15):
        case_id = str(uuid.uuid4())
        bodies = [
            ngo.body("case.opened", case_id, {"minor": False}, OPENED_ATTRS, {"notes": f"{n}{i}"})
            for i in range(2)
        ]
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def submit(
            body: dict[str, object], barrier: threading.Barrier, outcomes: list[object]
        ) -> None:
            barrier.wait()
            try:
                outcomes.append(world.ledger.submit(principal, json.dumps(body).encode())[0])
            except Conflict as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=submit, args=(b, barrier, outcomes)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(map(str, outcomes)) in (["201", "conflict"], ["201", "write_conflict"])
        read = ngo.read(case_id)
        assert read.status_code == 200 and read.json()["payload"]["notes"] in (f"{n}0", f"{n}1")
