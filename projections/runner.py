"""Feeds the projections from the log: pages in order, each read and parsed once for all
projections, one transaction per page with every projection's tracking in it; a supervisor
thread that follows new entries, restarts a failed projection after a pause and reports it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import IntegrityError

from ledger.concurrency import Background
from ledger.storage.base import Store, ViewStore
from projections.base import Projection

log = logging.getLogger("ledger.projections")
PAGE = 2000


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
    # Other tables kept in the views' database (the statistics releases): given by whoever
    # builds the runner, so a process never sets up read models without them.
    schema: Sequence[str] = field(kw_only=True)
    health: dict[str, Health] = field(default_factory=dict)

    def setup(self) -> None:
        self.views.setup([*(stmt for p in self.projections for stmt in p.schema), *self.schema])
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
        return self.catch_up_all([projection], progress, until)

    def catch_up_all(
        self,
        projections: Sequence[Projection],
        progress: Callable[[int], None] | None = None,
        until: int | None = None,
    ) -> int:
        """Bring the projections up to the log (or `until`), reading and parsing each page
        once for all of them, in one transaction per page. Returns the entries applied,
        summed over the projections.

        Each projection applies the page from its own tracked position, read under the
        transaction's lock, and tracks the page's end in the same transaction: so another
        process (a second API process, a rebuild) moving a projection meanwhile makes this
        pass skip it, never apply an entry twice.
        """
        applied = 0
        end = self.store.log_size() if until is None else until
        while projections:
            start = min(self.views.position(p.name) for p in projections)
            if start >= end:
                break
            rows = self.store.entries(start, min(start + self.page, end))
            if not rows or rows[0][0] != start:
                break  # not committed yet (or a gap the audit will name): try again later
            page_end = rows[-1][0] + 1
            entries = [(index, json.loads(raw)) for index, raw in rows]
            done = 0
            with self.views.transaction() as cur:
                due = []
                for projection in projections:
                    at = self.views.position_in(cur, projection.name)
                    if start <= at < page_end:  # else moved past this page, or back before it
                        due.append((projection, at))
                with self.views.writes(cur) as writer:  # reads none of its results
                    for projection, at in due:
                        for index, entry in entries[at - start :]:
                            projection.apply(self.views, writer, index, entry)
                for projection, at in due:
                    self.views.track(cur, projection.name, page_end)
                    done += page_end - at
            applied += done
            if progress is not None and done:
                progress(done)
        return applied

    def catch_up(self, name: str | None = None) -> int:
        return self.catch_up_all(self.named(name))

    def rebuild(
        self, name: str | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        """Clear and replay from position 0; returns the entries applied (summed over the
        projections)."""
        chosen = self.named(name)
        with self.views.transaction() as cur:
            for projection in chosen:
                projection.clear(self.views, cur)
                self.views.forget(cur, projection.name)
        return self.catch_up_all(chosen, progress)

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


class Follower(Background):
    """Keeps every projection caught up; a failing one is retried after a pause, and reported."""

    name = "projections"

    def __init__(self, runner: ProjectionRunner, retry_s: float = 1.0) -> None:
        super().__init__()
        self.runner = runner
        self.retry_s = retry_s

    def run_once(self) -> None:
        now = time.monotonic()
        ready = []
        for projection in self.runner.projections:
            health = self.runner.health.setdefault(projection.name, Health())
            if not (health.last_failure_at and now - health.last_failure_at < self.retry_s):
                ready.append(projection)
        try:
            self.runner.catch_up_all(ready)  # one pass for all: the usual case
        except IntegrityError:
            return  # another process applied the same page first; ours rolled back
        except Exception:  # noqa: S110 - one of them failed: find it, let the others go on
            pass
        else:
            for projection in ready:
                self.runner.health[projection.name].last_failure_at = None
            return
        for projection in ready:
            health = self.runner.health[projection.name]
            try:
                self.runner.catch_up_one(projection)
                health.last_failure_at = None
            except IntegrityError:
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
        while not self.stopping.is_set():
            self.run_once()
            self.runner.views.wait_for_appends(0.5)
