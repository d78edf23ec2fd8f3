"""Delivering notices to agencies' webhooks: at least once, in log order per endpoint.

Each endpoint is leased to one worker at a time (its deliveries stay in order across
processes, and a worker killed mid-delivery leaves a lease that expires), delivered to by one
thread at most (a slow endpoint holds its own thread only), and retried with exponential
backoff and jitter while it fails: the notices behind its head wait, those of other endpoints
do not (a failing endpoint is left alone until its retry time: the circuit is open). A notice
still undelivered once the retry period (three days by default) has passed since it was made
is dead-lettered: recorded as such, shown to the agency, and the endpoint moves on. The
`webhook-id` of a notice is the same on every attempt, so a receiver drops repeats by it.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import httpx

from ledger.concurrency import Background
from ledger.contract.vocabulary import format_timestamp, parse_timestamp
from ledger.services.logtime import utc_now
from ledger.services.notices import epoch_ms, shown
from ledger.services.outbound import OutboundPolicy, Refused, Target, post
from ledger.services.webhooks import WebhookSecrets, sign
from ledger.storage.base import Store
from ledger.storage.outbox import Outcome, StoredNotice, Webhook

log = logging.getLogger("ledger.delivery")
FLUSH, FLUSH_S = 20, 0.2  # outcomes recorded together: at most this many, or this long apart


@dataclass(frozen=True)
class Retries:
    period_s: float = 3 * 86_400.0  # a notice is retried this long after it was made
    base_s: float = 5.0  # the first retry after about this long, then doubling ...
    max_s: float = 3_600.0  # ... up to this long between attempts
    lease_s: float = 30.0  # an endpoint's lease (longer than one attempt can take)

    def delay_s(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^(n-1)."""
        full = min(self.max_s, self.base_s * 2 ** min(attempts - 1, 40))
        return full * (0.5 + 0.5 * rng())


def message_id(notice: StoredNotice) -> str:
    """The idempotency key: one per notice, the same on every attempt."""
    return f"ntc_{notice.seq}"


def payload(notice: StoredNotice, origin: str, receipt: str | None) -> bytes:
    """The Standard Webhooks body: the notice's kind, ids, position and ask; never anything
    personal. An erasure carries its receipt (signed by the ledger's receipt key)."""
    data = {**shown(notice), "origin": origin}
    del data["acknowledged"]  # the receiver's own answer, later: not part of the notice
    if notice.kind == "case.erased":
        data["receipt"] = receipt
    body = {"type": notice.kind, "timestamp": notice.created_at, "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class Deliverer(Background):
    """Delivers every endpoint's notices; `run()` polls for endpoints with work every
    `poll_s` seconds and hands each to a thread of its own (at most `concurrency`)."""

    name = "notice-delivery"

    def __init__(
        self,
        store: Store,
        secrets: WebhookSecrets,
        policy: OutboundPolicy,
        origin: str,
        *,
        retries: Retries = Retries(),
        concurrency: int = 8,
        poll_s: float = 0.1,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__()
        self.store, self.secrets, self.policy, self.origin = store, secrets, policy, origin
        self.retries, self.concurrency, self.poll_s, self.now = retries, concurrency, poll_s, now
        self.owner = uuid.uuid4().hex  # this worker's name on its leases
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="webhook")
        self._busy: set[str] = set()
        # Leases this worker holds (endpoint -> until, epoch ms): kept between deliveries
        # and renewed with each record, so a busy endpoint costs no claim per notice.
        self._held: dict[str, int] = {}
        self._clients: dict[str, httpx.Client] = {}
        self._guard = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.dispatch()
            except Exception:
                log.exception("notice delivery: polling failed; retrying")
            self.stopping.wait(self.poll_s)

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in self._clients.values():
            client.close()
        for hook_id in list(self._held):  # handed over at once, not when they expire
            self.store.release_webhook(hook_id, self.owner)
        self._held.clear()

    def dispatch(self) -> int:
        """Start a delivery thread for each endpoint with work not already being delivered
        to; returns how many started."""
        now_ms = epoch_ms(self.now())
        started = 0
        for hook in self.store.due_webhooks(now_ms, self.owner):
            with self._guard:
                if hook.id in self._busy or len(self._busy) >= self.concurrency:
                    continue
                held = self._held.get(hook.id, 0) - now_ms > self.retries.lease_s * 500
                if not held:
                    if not self.store.claim_webhook(
                        hook.id, self.owner, now_ms, self._lease(now_ms)
                    ):
                        self._held.pop(hook.id, None)
                        continue  # another worker holds it
                    self._held[hook.id] = self._lease(now_ms)
                self._busy.add(hook.id)
            self._pool.submit(self._drain, hook.id)
            started += 1
        return started

    def _lease(self, now_ms: int) -> int:
        return now_ms + int(self.retries.lease_s * 1000)

    def _client(self, hook_id: str) -> httpx.Client:
        with self._guard:
            if hook_id not in self._clients:
                self._clients[hook_id] = self.policy.client()
            return self._clients[hook_id]

    def _drain(self, hook_id: str) -> None:
        try:
            hook = self.store.webhook(hook_id)
            while hook is not None and not self.stopping.is_set():
                batch = self.store.notices(hook.agency, hook.cursor, 50)
                if not batch or not self._deliver(hook, batch):
                    break
                hook = self.store.webhook(hook_id)
        except Exception:
            log.exception("notice delivery to endpoint %s failed; retrying", hook_id)
        finally:
            with self._guard:
                self._busy.discard(hook_id)

    def _deliver(self, hook: Webhook, batch: list[StoredNotice]) -> bool:
        """Deliver a batch in order, recording the outcomes together (every `FLUSH` or so:
        a worker killed before it records them delivers them again, under the same
        `webhook-id`); False once one failed (the endpoint waits) or the lease was lost."""
        target: Target | Refused
        try:
            target = self.policy.check(hook.url)  # again: the name may resolve elsewhere now
        except Refused as exc:
            target = exc
        attempts, done = hook.attempts, list[Outcome]()
        flushed = time.monotonic()
        for notice in batch:
            now = self.now()
            error = self._attempt(hook, notice, target, now)
            attempts += 1
            age = (now - parse_timestamp(notice.created_at)).total_seconds()
            if error is not None and age <= self.retries.period_s:
                if not self._record(hook, done, now):
                    return False
                delay = self.retries.delay_s(attempts)
                self._held.pop(hook.id, None)  # the failure releases it: any worker retries
                self.store.record_failure(
                    hook.id, self.owner, attempts, epoch_ms(now) + int(delay * 1000), error,
                    format_timestamp(now),
                )  # fmt: skip
                return False
            if error is not None:
                log.warning(
                    "notice %s dead-lettered for endpoint %s: %s", notice.seq, hook.id, error
                )
            outcome = "delivered" if error is None else "dead"
            done.append(Outcome(notice.seq, outcome, attempts, error, format_timestamp(now)))
            attempts = 0
            if len(done) >= FLUSH or time.monotonic() - flushed > FLUSH_S:
                if not self._record(hook, done, now):
                    return False
                flushed = time.monotonic()
        return self._record(hook, done, self.now())

    def _record(self, hook: Webhook, done: list[Outcome], now: datetime) -> bool:
        """Record the outcomes so far (and renew the lease); False if the lease was lost
        (this worker stalled past it: another has the endpoint now)."""
        until = self._lease(epoch_ms(now))
        recorded = self.store.record_deliveries(hook.id, self.owner, done, until)
        if done:
            if recorded:
                self._held[hook.id] = until
            else:
                self._held.pop(hook.id, None)
        done.clear()
        return recorded

    def _attempt(
        self, hook: Webhook, notice: StoredNotice, target: Target | Refused, now: datetime
    ) -> str | None:
        if isinstance(target, Refused):
            return f"refused: {target}"
        receipt = None
        if notice.kind == "case.erased":
            erasure = self.store.erasure(notice.case_id)
            receipt = None if erasure is None else erasure.receipt
            if receipt is None:
                return "the erasure receipt is not signed yet"
        body = payload(notice, self.origin, receipt)
        msg_id = message_id(notice)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(self.secrets.signers(hook, now), msg_id, now, body),
        }
        return post(self._client(hook.id), target, body, headers)
