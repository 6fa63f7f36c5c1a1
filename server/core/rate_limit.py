"""Token buckets: how many requests a client may make per second, with a burst, and how long to wait when over."""

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    time_s: float


class TokenBuckets:
    """One bucket per key (a client address, an API key): `rate_per_s` tokens a second up to `burst`; a request
    takes one. Memory is bounded: past `max_keys` buckets the full ones (idle callers) are forgotten, and if that
    frees nothing every bucket is, which errs towards letting requests through rather than growing without end."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least one request")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now_s: float) -> float:
        """Takes a token for one request of `key` at `now_s`: 0.0 when allowed, else the seconds until a token is
        there (nothing is taken then)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_idle(now_s)
            bucket = self._buckets[key] = _Bucket(self.burst, now_s)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now_s - bucket.time_s) * self.rate_per_s)
            bucket.time_s = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def _forget_idle(self, now_s: float) -> None:
        full_at = self.burst / self.rate_per_s
        idle = [key for key, b in self._buckets.items() if now_s - b.time_s >= full_at]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(wait_s: float) -> str:
    """HTTP's Retry-After in whole seconds, rounded up so that a client that waits that long finds a token."""
    return str(max(1, math.ceil(wait_s)))
