"""Per-token rate limiting (a token bucket per token, in this API process)."""

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

    def check(self, token_id: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(token_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                retry = max(1, math.ceil((1 - tokens) / self.rate))
                self._buckets[token_id] = (tokens, now)
                raise TooManyRequests(
                    "too many requests for this token; slow down", retry_after=retry
                )
            self._buckets[token_id] = (tokens - 1, now)
