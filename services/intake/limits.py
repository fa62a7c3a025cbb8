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


# A body of at most this many bytes, its length declared up front, is read in one go and costs little
# memory: 32 senders of 100 KiB documents waited out Retry-After: 5 behind a cap of 8 that was set for 5 MiB
# bodies and slow streams (the bench's 32-sender cells fell to a quarter of its 8-sender ones).
SMALL_UPLOAD_BYTES = 256 * 1024
# Small uploads in progress per organisation, as a multiple of the cap on the others: still bounded
# (8 x 8 x 256 KiB = 16 MiB of bodies by default), never what holds a busy sender back.
SMALL_UPLOADS_FACTOR = 8


class UploadSlots:
    """At most ``per_org`` uploads in progress per organisation and process, and ``SMALL_UPLOADS_FACTOR``
    times as many small ones (declared ``Content-Length`` up to ``SMALL_UPLOAD_BYTES``): a sender cannot
    hold every connection and the memory with large or slow uploads (the rate limit counts starts, this
    counts what is open)."""

    def __init__(self, per_org: int) -> None:
        self._caps = {False: per_org, True: per_org * SMALL_UPLOADS_FACTOR}
        self._open: dict[tuple[str, bool], int] = {}

    @contextlib.contextmanager
    def slot(self, org: str, content_length: int | None = None) -> Iterator[None]:
        key = (org, content_length is not None and content_length <= SMALL_UPLOAD_BYTES)
        if self._open.get(key, 0) >= self._caps[key[1]]:
            raise TooManyUploads(org)
        self._open[key] = self._open.get(key, 0) + 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]
