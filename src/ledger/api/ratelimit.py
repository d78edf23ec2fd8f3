"""Per-token limits in this API process: a token bucket of requests, and a budget of body
bytes read and not yet answered."""

from __future__ import annotations

import math
import threading
import time

from ledger.errors import LedgerError


class TooManyRequests(LedgerError):
    status, code = 429, "rate_limited"


# A request's body weighs one request per this many bytes (see `RateLimiter.weight`).
UNIT_BYTES = 4_096  # a real single event (1 KiB of payload) weighs one request


class RateLimiter:
    """`rate` requests per second per token on average, bursts of up to `burst`; a large
    body or a batch weighs more than one request."""

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

    def weight(self, size: int, items: int = 1) -> int:
        """What a request weighs: its item count (a batch's events), or its body in 4 KiB
        units when that is more, so a token's bytes per second are bounded as well as its
        requests; at most the burst, so a full bucket pays for any request."""
        return max(1, min(self.burst, max(items, -(-size // UNIT_BYTES))))

    def pay(self, token_id: str, weight: int, paid: int) -> int:
        """Take what a request weighs beyond what it has paid already (429, taking nothing,
        when the bucket cannot); returns what it has paid in all."""
        if weight <= paid:
            return paid
        self.check(token_id, weight - paid)
        return weight


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
