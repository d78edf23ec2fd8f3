"""Feeds the projections from the log: pages in order, one transaction per page per
projection, tracking in the same transaction; a supervisor thread that follows new entries,
restarts a failed projection after a pause and reports it."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import IntegrityError

from ledger.storage.base import Store, ViewStore
from projections.base import Projection

log = logging.getLogger("ledger.projections")
PAGE = 500


class _Moved(Exception):
    """The projection's tracked position changed under us: re-read it and go on."""


@dataclass
class Health:
    failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None


@dataclass
class ProjectionRunner:
    store: Store
    views: ViewStore
    projections: Sequence[Projection]
    page: int = PAGE
    health: dict[str, Health] = field(default_factory=dict)

    def setup(self) -> None:
        from projections import stats

        self.views.setup([*(stmt for p in self.projections for stmt in p.schema), *stats.SCHEMA])
        # Every tracking row exists, so it can be locked. Created only if missing, never reset:
        # another process (the worker, a rebuild) may be committing pages as this one starts.
        with self.views.transaction() as cur:
            for projection in self.projections:
                self.views.start_tracking(cur, projection.name)

    def named(self, name: str | None) -> list[Projection]:
        chosen = [p for p in self.projections if name in (None, p.name)]
        if not chosen:
            raise KeyError(f"no projection named {name!r}")
        return chosen

    def catch_up_one(
        self,
        projection: Projection,
        progress: Callable[[int], None] | None = None,
        until: int | None = None,
    ) -> int:
        """Apply every entry the projection has not applied yet; returns how many."""
        applied = 0
        position = self.views.position(projection.name)
        end = self.store.log_size() if until is None else until
        while position < end:
            rows = self.store.entries(position, min(position + self.page, end))
            if not rows or rows[0][0] != position:
                break  # not committed yet (or a gap the audit will name): try again later
            try:
                with self.views.transaction() as cur:
                    # Another process (a second API process, a rebuild) may have moved this
                    # projection since we read its position: then this page is not ours.
                    if self.views.position_in(cur, projection.name) != position:
                        raise _Moved
                    for index, raw in rows:
                        projection.apply(self.views, cur, index, json.loads(raw))
                    self.views.track(cur, projection.name, rows[-1][0] + 1)
            except _Moved:
                position = self.views.position(projection.name)
                continue
            position = rows[-1][0] + 1
            applied += len(rows)
            if progress is not None:
                progress(len(rows))
        return applied

    def catch_up(self, name: str | None = None) -> int:
        return sum(self.catch_up_one(p) for p in self.named(name))

    def rebuild(
        self, name: str | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Clear and replay from position 0; returns how many entries were applied."""
        total = 0
        for projection in self.named(name):
            with self.views.transaction() as cur:
                projection.clear(self.views, cur)
                self.views.forget(cur, projection.name)
            total += self.catch_up_one(projection, progress)
        return total

    def status(self) -> list[dict[str, object]]:
        size = self.store.log_size()
        out = []
        for p in self.projections:
            position = self.views.position(p.name)
            health = self.health.get(p.name, Health())
            out.append(
                {
                    "name": p.name,
                    "position": position,
                    "lag": size - position,
                    "failures": health.failures,
                    "last_error": health.last_error,
                }
            )
        return out


class Follower:
    """Keeps every projection caught up; a failing one is retried after a pause, and reported."""

    def __init__(self, runner: ProjectionRunner, retry_s: float = 1.0) -> None:
        self.runner = runner
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="projections", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> None:
        now = time.monotonic()
        for projection in self.runner.projections:
            health = self.runner.health.setdefault(projection.name, Health())
            if health.last_failure_at and now - health.last_failure_at < self.retry_s:
                continue
            try:
                self.runner.catch_up_one(projection)
                health.last_failure_at = None
            except IntegrityError:
                # Another process applied the same page first (several API processes follow
                # the log): its transaction won, ours rolled back; nothing was applied twice.
                continue
            except Exception as exc:  # supervise: report, pause, restart
                health.failures += 1
                health.last_error = type(exc).__name__
                health.last_failure_at = time.monotonic()
                log.error(
                    "projection %s failed (%s); restarting in %.1f s",
                    projection.name,
                    type(exc).__name__,
                    self.retry_s,
                )

    def run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self.runner.views.wait_for_appends(0.5)
