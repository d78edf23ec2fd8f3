"""Group commit (`ledger.concurrency`): concurrent submissions share one batch, and each
caller gets exactly its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from ledger.concurrency import AsyncGroup, GroupCommit


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


def test_async_submissions_arriving_while_a_batch_runs_form_the_next_batch_in_order() -> None:
    """The API's grouping (`AsyncGroup`): the first caller's batch starts at once, everyone
    who arrives meanwhile is the next batch (one worker-thread call), answers and refusals
    go to their own callers, and no thread waits per caller."""
    first_running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []
    threads: set[str] = set()

    def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        threads.add(threading.current_thread().name)
        if len(batches) == 1:
            first_running.set()
            release.wait(10)
        return [ValueError(f"refused {i}") if i % 3 == 0 else i * 10 for i in items]

    group: AsyncGroup[int, int] = AsyncGroup(run_batch)

    async def submit(i: int) -> object:
        try:
            return await group.submit(i)
        except ValueError as exc:
            return str(exc)

    async def scenario() -> list[object]:
        leader = asyncio.create_task(submit(1))
        await asyncio.to_thread(first_running.wait, 10)
        followers = [asyncio.create_task(submit(i)) for i in range(2, 8)]
        await asyncio.sleep(0.01)  # every follower is queued behind the running batch
        assert len(group._queue) == 6
        release.set()
        return list(await asyncio.gather(leader, *followers))

    answers = asyncio.run(scenario())
    assert batches == [[1], [2, 3, 4, 5, 6, 7]]
    assert group.batches == 2 and group.items == 7
    assert answers == [10, 20, "refused 3", 40, 50, "refused 6", 70]
    assert threading.current_thread().name not in threads  # batches run off the event loop


def test_an_async_batch_that_fails_as_a_whole_is_every_callers_error() -> None:
    def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        raise OSError("disk full")

    group: AsyncGroup[int, int] = AsyncGroup(run_batch)

    async def scenario() -> list[BaseException | int]:
        return list(await asyncio.gather(group.submit(1), group.submit(2), return_exceptions=True))

    errors = asyncio.run(scenario())
    assert [str(e) for e in errors] == ["disk full", "disk full"]
    assert errors[0] is not errors[1]  # each caller raises its own exception object
    assert group.batches == 1


def test_callers_still_queued_when_the_group_is_cancelled_are_cancelled_not_left_waiting() -> None:
    started = threading.Event()

    def run_batch(items: Sequence[int]) -> list[int | BaseException]:
        started.set()
        time.sleep(0.2)
        return list(items)

    group: AsyncGroup[int, int] = AsyncGroup(run_batch)

    async def scenario() -> list[object]:
        first = asyncio.create_task(group.submit(1))
        await asyncio.to_thread(started.wait, 10)
        second = asyncio.create_task(group.submit(2))
        await asyncio.sleep(0)
        assert group._runner is not None
        group._runner.cancel()  # as when the server stops
        return list(await asyncio.gather(first, second, return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert group._queue == [] and group._runner is None
