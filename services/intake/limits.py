"""A token bucket per organisation: a submission beyond the rate raises ``RateLimited`` with the wait
(the routes answer 429 with Retry-After).

Per process: with several intake replicas each applies the limit, so the cluster-wide rate is the
per-replica rate times the replica count (stated in the README).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass



class RateLimited(Exception):
    """The organisation has used up its submissions for now; one is free again in ``wait`` seconds."""

    def __init__(self, org: str, wait: int) -> None:
        super().__init__(f"submission rate limit reached for {org}")
        self.org = org
        self.wait = wait


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, org: str, cost: float = 1.0) -> None:
        now = time.monotonic()
        bucket = self._buckets.setdefault(org, _Bucket(self._burst, now))
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < cost:
            wait = math.ceil((cost - bucket.tokens) / self._rate) if self._rate else 60
            raise RateLimited(org, max(wait, 1))
        bucket.tokens -= cost
