"""The object-store port: streamed writes that hash as they go, streamed reads, atomic visibility.

An object is visible only once it is complete: a write that fails half-way leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str
    content_type: str


class ObjectNotFound(Exception):
    pass


class ObjectStoreUnavailable(Exception):
    """The store could not be reached; the caller may try again later."""


class HashingReader:
    """Counts and hashes a byte stream while it passes through."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if chunk:
                self._hash.update(chunk)
                self.size += len(chunk)
                yield chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ObjectStore(ABC):
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> ObjectInfo:
        """Store the stream under ``key``; returns its size and SHA-256 as written."""

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        """``put`` of bytes already in hand; a store may write them with fewer round trips."""
        return await self.put(key, one_chunk(data), content_type=content_type)

    @abstractmethod
    def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes ``start`` to ``end`` (exclusive); raises ``ObjectNotFound``."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    async def copy(self, source: str, target: str) -> ObjectInfo: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[str]: ...

    @abstractmethod
    async def is_healthy(self) -> bool: ...

    async def retain(self, key: str, *, until: datetime, mode: str) -> bool:
        """Lock ``key`` against deletion and overwrite until ``until``; False where the store cannot."""
        return False

    async def presign(self, key: str, *, ttl: int, content_type: str) -> str | None:
        """A URL serving ``key`` without credentials for ``ttl`` seconds; None where the store has none."""
        return None

    async def expire_abandoned(self) -> int:
        """Delete staged objects nobody claimed within the configured age (the bucket's lifecycle rule does
        this for S3, so by default nothing); the number deleted."""
        return 0

    async def read_all(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.get(key)])
