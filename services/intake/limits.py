"""A token bucket per organisation: a submission beyond the rate raises ``RateLimited`` with the wait
(the routes answer 429 with Retry-After).

Per process: with several intake replicas each applies the limit, so the cluster-wide rate is the
per-replica rate times the replica count (stated in the README).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
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


class TooManyUploads(Exception):
    """The organisation already has its maximum of uploads in progress on this process."""

    def __init__(self, org: str) -> None:
        super().__init__(f"concurrent upload limit reached for {org}")
        self.org = org


class UploadSlots:
    """At most ``per_org`` uploads in progress per organisation and process: a sender cannot hold every
    connection and worker with slow uploads (the rate limit counts starts, this counts what is open)."""

    def __init__(self, per_org: int) -> None:
        self._per_org = per_org
        self._open: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, org: str) -> Iterator[None]:
        if self._open.get(org, 0) >= self._per_org:
            raise TooManyUploads(org)
        self._open[org] = self._open.get(org, 0) + 1
        try:
            yield
        finally:
            self._open[org] -= 1
            if not self._open[org]:
                del self._open[org]
