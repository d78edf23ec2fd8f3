"""Concurrent writes inside one ledger process: group commit shares transactions, and a
submission that lost a race is decided again on the new state instead of being refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from ledger.storage.base import ConflictError
from tests.conftest import World


def run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Start every job at once (a barrier) and return their results in order."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # reported by the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_many_writers_on_one_case_all_land_with_consecutive_versions(world: World) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    principal = world.ledger.authenticate(ngo.auth()["Authorization"].split()[1])
    bodies = [
        json.dumps(
            ngo.body(
                "service.delivered",
                case_id,
                {"referral_id": None},
                {"component": "housing"},
                {"notes": f"visit {i}"},
            )
        ).encode()
        for i in range(16)
    ]
    results = run_together([lambda b=b: world.ledger.submit(principal, b) for b in bodies])

    assert all(not isinstance(r, BaseException) for r in results), results
    assert [status for status, _ in results] == [201] * 16
    assert sorted(answer["case_version"] for _, answer in results) == list(range(2, 18))
    indexes = sorted(answer["index"] for _, answer in results)
    assert len(set(indexes)) == 16
    assert world.ledger.store.log_size() == indexes[-1] + 1
    # Every event is in the log exactly once, at the index its answer gave.
    for _, answer in results:
        found = world.ledger.store.find_event(answer["event_id"])
        assert found is not None and found.position == answer["index"]


def test_identical_submissions_racing_get_one_201_and_the_same_answer_as_200(
    world: World,
) -> None:
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    principal = world.ledger.authenticate(ngo.auth()["Authorization"].split()[1])
    body = json.dumps(
        ngo.body("service.delivered", case_id, {"referral_id": None}, {"component": "housing"})
    ).encode()
    size = world.ledger.store.log_size()
    results = run_together([lambda: world.ledger.submit(principal, body) for _ in range(8)])

    assert all(not isinstance(r, BaseException) for r in results), results
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert len({json.dumps(answer, sort_keys=True) for _, answer in results}) == 1
    assert world.ledger.store.log_size() == size + 1


def test_a_write_conflict_that_keeps_recurring_is_a_409_write_conflict(world: World) -> None:
    """After the ledger's own attempts the caller gets a 409 it can resend unchanged."""
    ngo = world.agency("ngo-a")
    case_id = ngo.open_case()
    store = world.ledger.store
    real_append = store.append
    attempts = []

    def always_conflicting(commit: Any) -> list[int]:
        attempts.append(commit)
        raise ConflictError("the case changed")

    store.append = always_conflicting  # type: ignore[method-assign]
    try:
        response = ngo.submit(
            "service.delivered", case_id, {"referral_id": None}, {"component": "housing"}
        )
    finally:
        store.append = real_append  # type: ignore[method-assign]
    assert response.status_code == 409
    assert response.json()["error"] == "write_conflict"
    assert len(attempts) > 1
    assert store.find_event(json.loads(response.request.content)["envelope"]["event_id"]) is None
