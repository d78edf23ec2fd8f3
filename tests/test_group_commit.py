"""Group commit (`ledger.storage.group`): concurrent submissions share one batch, and each
caller gets exactly its own answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ledger.storage.group import GroupCommit


def test_submissions_arriving_while_a_batch_runs_form_the_next_batch_in_order() -> None:
    first_running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if len(batches) == 1:
            first_running.set()
            release.wait(10)
        return [ValueError(f"refused {i}") if i % 3 == 0 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run_batch)
    answers: dict[int, object] = {}

    def submit(i: int) -> None:
        try:
            answers[i] = group.submit(i)
        except ValueError as exc:
            answers[i] = str(exc)

    leader = threading.Thread(target=submit, args=(1,))
    leader.start()
    assert first_running.wait(10)
    followers = [threading.Thread(target=submit, args=(i,)) for i in range(2, 8)]
    for t in followers:
        t.start()
    while len(group._queue) < 6:  # every follower queued behind the running batch
        time.sleep(0.001)
    release.set()
    for t in [leader, *followers]:
        t.join(10)

    assert batches[0] == [1]
    assert sorted(batches[1]) == [2, 3, 4, 5, 6, 7]  # one transaction for all six
    assert group.batches == 2 and group.items == 7
    assert answers == {
        1: 10,
        2: 20,
        3: "refused 3",
        4: 40,
        5: 50,
        6: "refused 6",
        7: 70,
    }


def test_a_batch_that_fails_as_a_whole_is_every_callers_error() -> None:
    def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        raise OSError("disk full")

    group: GroupCommit[int, int] = GroupCommit(run_batch)
    try:
        group.submit(1)
    except OSError as exc:
        assert str(exc) == "disk full"
    else:
        raise AssertionError("the batch's failure must reach the caller")
    assert group.batches == 1
