"""Per-token limits in this API process: a token bucket of requests, and a budget of body
bytes read and not yet answered."""

from __future__ import annotations

import math
import threading
import time

from ledger.errors import LedgerError


class TooManyRequests(LedgerError):
    status, code = 429, "rate_limited"


class RateLimiter:
    """`rate` requests per second per token on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, token_id: str, cost: float = 1) -> None:
        """Take `cost` from the token's bucket, or refuse (429, taking nothing)."""
        if self.rate <= 0 or cost <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(token_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < cost:
                retry = max(1, math.ceil((cost - tokens) / self.rate))
                self._buckets[token_id] = (tokens, now)
                raise TooManyRequests(
                    "too many requests for this token; slow down", retry_after=retry
                )
            self._buckets[token_id] = (tokens - cost, now)

    def check_rest(self, token_id: str, weight: int) -> None:
        """The rest of a request that weighs `weight` (a batch: its item count) after the
        one the gate took: at most the burst in all, so a full bucket pays for any batch."""
        self.check(token_id, min(weight - 1, self.burst - 1))


class InFlight:
    """Body bytes each token has had read and not yet answered, up to `budget` per token.

    The cap on one body bounds what one request costs; this bounds what one token's
    concurrent requests cost together (a caller opening many connections cannot make the
    process hold many bodies at once), while many small requests of one token (the bench's
    32 clients share one, at about 2.5 KB each) stay far below it."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, token_id: str, size: int) -> None:
        """Count `size` more bytes for the token, or refuse (429) and count nothing."""
        if size <= 0:
            return
        with self._lock:
            held = self._held.get(token_id, 0)
            if held + size > self.budget:
                raise TooManyRequests(
                    "too many request bytes in flight for this token; wait for the answers"
                    " to its earlier requests",
                    retry_after=1,
                )
            self._held[token_id] = held + size

    def give_back(self, token_id: str, size: int) -> None:
        if size <= 0:
            return
        with self._lock:
            left = self._held.get(token_id, 0) - size
            if left > 0:
                self._held[token_id] = left
            else:
                self._held.pop(token_id, None)

    def held(self, token_id: str) -> int:
        """For tests: what the token holds now."""
        with self._lock:
            return self._held.get(token_id, 0)
