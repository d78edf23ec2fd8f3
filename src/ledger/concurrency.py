"""Concurrency toolkit: group commit, per-key locks and background loops.

Group commit: concurrent appends in one process share one transaction and one flush.

A request thread hands its work to `GroupCommit.submit` and waits. Whoever holds the leader
lock runs everything queued so far as one batch; the others wait for the lock, and when they
get it either find their own work already done (answered by the leader) or lead the next
batch with everything queued meanwhile. So a batch grows by itself while the previous one
flushes, and a lone request costs what it did before: no timer, no background thread.

Each item runs in its own savepoint inside the batch's transaction (see `SQLStore`), so one
item's refusal (a conflict, a revoked key) rolls back that item alone and the others commit:
every caller gets exactly the answer it would have had alone, in the order the batch ran.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio.to_thread

WRITE_ATTEMPTS = 8  # a write that lost a race is decided again up to this many times

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


class _Grouping(Generic[Item, Result]):
    """Runs `run_batch(items)` for batches of concurrently submitted items.

    `run_batch` returns one result or exception per item, in order (`submit` returns the
    result or raises the exception); an exception it raises itself (the transaction failed
    as a whole) is every item's answer.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        max_batch: int = 256,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self.batches = 0  # for tests and the bench: how many batches ran
        self.items = 0

    def _outcomes(self, items: list[Item]) -> Sequence[Result | BaseException]:
        try:
            outcomes = self._run_batch(items)
            if len(outcomes) != len(items):
                raise RuntimeError("run_batch must answer every item")
        except BaseException as exc:  # the whole transaction failed: everyone's answer
            outcomes = [exc] * len(items)
        self.batches += 1
        self.items += len(items)
        return outcomes


class GroupCommit(_Grouping[Item, Result]):
    """Group commit for threads: the caller that finds no batch running leads the next."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        max_batch: int = 256,
    ) -> None:
        super().__init__(run_batch, max_batch)
        self._leader = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Waiting[Item, Result]] = []

    def submit(self, item: Item) -> Result:
        mine: _Waiting[Item, Result] = _Waiting(item)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done:
            with self._leader:
                if mine.done:
                    break
                with self._queue_lock:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                self._lead(batch)
        if mine.error is not None:
            own = _own_copy(mine.error)
            if own is mine.error:
                raise own
            raise own from mine.error
        return mine.result  # type: ignore[return-value]

    def _lead(self, batch: list[_Waiting[Item, Result]]) -> None:
        outcomes = self._outcomes([w.item for w in batch])
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiting.error = outcome
            else:
                waiting.result = outcome
            waiting.done = True


class AsyncGroup(_Grouping[Item, Result]):
    """`GroupCommit` for asyncio callers (the API's request handlers): what is submitted
    while a batch runs forms the next batch, and each batch is one call of `run_batch` in a
    worker thread. No thread waits per caller, and a lone caller's batch starts at once."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
        max_batch: int = 256,
    ) -> None:
        super().__init__(run_batch, max_batch)
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        waiting: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, waiting))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return await waiting

    async def _run(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                items = [item for item, _ in batch]
                outcomes = await anyio.to_thread.run_sync(self._outcomes, items)
                for (_, waiting), outcome in zip(batch, outcomes, strict=True):
                    if waiting.done():  # its caller went away; the answer stands in the log
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.set_exception(_own_copy(outcome))
                    else:
                        waiting.set_result(outcome)
                batch = []
        finally:  # the queue is empty, or this task was cancelled (the server stopping)
            self._runner = None
            for _, waiting in [*batch, *self._queue]:
                waiting.cancel()
            self._queue.clear()


def _own_copy(error: BaseException) -> BaseException:
    """Each waiter raises its own exception object (several threads re-raising one object
    would overwrite each other's tracebacks), of the same type with the same arguments."""
    try:
        return copy.copy(error)
    except Exception:  # an exception type that cannot be copied: share the original
        return error


class KeyedLocks:
    """One lock per key, alive only while someone holds or waits for it.

    The ledger holds a case's lock from loading the case to committing its event, so writers
    to the same case in this process take turns instead of losing races (which group commit,
    putting them in one transaction, would otherwise make certain).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]


# --- background loops ---------------------------------------------------------------------
class Background:
    """Runs `run()` on a daemon thread from `start()`; `stop()` sets `stopping` and waits up
    to `join_s` seconds for `run()` to notice and return."""

    name = "background"
    join_s = 10.0

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=self.join_s)

    def run(self) -> None:
        raise NotImplementedError
