"""The document-store port: JSON documents in named collections, a small MongoDB-style query language.

Both adapters (SQLite now, MongoDB later) implement exactly this surface, checked by one contract
suite. Documents carry their key in ``_id``. Filters are MongoDB's subset used here: equality on dotted
paths (matching an array element too), ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in`` and
``$exists``, and ``$or`` / ``$and`` over lists of filters. Every ``find`` is paged: a caller asks for at most ``MAX_PAGE`` documents at a time.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
Document = dict[str, Any]
Filter = dict[str, Any]
MAX_PAGE = 1000
ASCENDING = 1
DESCENDING = -1


@dataclass(frozen=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False

    @property
    def name(self) -> str:
        return ("ux_" if self.unique else "ix_") + "_".join(f.replace(".", "_") for f in self.fields)


class DuplicateKey(Exception):
    """An insert or update broke the primary key or a unique index."""


class StoreUnavailable(Exception):
    """The database could not be reached in time; the caller may answer 503 or retry."""


class WriteConflict(StoreUnavailable):
    """A transaction lost a race with a concurrent one and was rolled back; run it again as a whole.

    Only a caller can re-run a transaction's body, so the store raises this rather than retrying. It is a
    ``StoreUnavailable`` so that an edge which does not retry still answers 503 with Retry-After.
    """


class Session:
    """A transaction in progress; pass it to every operation that belongs to it."""

    def __init__(self) -> None:
        self._on_end: list[Callable[[bool], None]] = []

    def on_end(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` once the transaction has committed, ``callback(False)`` if it ended any
        other way (rolled back, or a COMMIT whose outcome its caller did not see). Registered inside a
        savepoint that is rolled back, it is dropped with the savepoint's writes. The outbox hands what a
        transaction added to its relay this way, so nothing is published before its COMMIT."""
        self._on_end.append(callback)

    def _mark(self) -> int:
        return len(self._on_end)

    def _drop_since(self, mark: int) -> None:
        del self._on_end[mark:]

    def _ended(self, committed: bool) -> None:
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            try:
                callback(committed)
            except Exception:  # the transaction's outcome stands whatever a listener does with it
                log.exception("store.on_end_failed", extra={"code": "DB001"})


class Collection(ABC):
    name: str

    @abstractmethod
    async def insert(self, doc: Document, *, session: Session | None = None) -> None: ...

    async def insert_many(self, docs: Sequence[Document], *, session: Session | None = None) -> None:
        """Insert every document (all or none when ``session`` is given); adapters may do it in one round trip."""
        for doc in docs:
            await self.insert(doc, session=session)

    @abstractmethod
    async def get(self, key: str, *, session: Session | None = None) -> Document | None: ...

    @abstractmethod
    async def replace(self, doc: Document, *, session: Session | None = None, upsert: bool = False) -> bool:
        """Replace the document with ``doc['_id']``; returns whether one was written."""

    @abstractmethod
    async def update(
        self,
        where: Filter,
        changes: Document,
        *,
        session: Session | None = None,
    ) -> int:
        """Set top-level or dotted fields on every document matching ``where``; returns how many."""

    @abstractmethod
    async def delete(self, where: Filter, *, session: Session | None = None) -> int:
        """Remove every document matching ``where``; returns how many."""

    @abstractmethod
    async def find(
        self,
        where: Filter | None = None,
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int = 100,
        skip: int = 0,
        session: Session | None = None,
    ) -> list[Document]: ...

    @abstractmethod
    async def count(self, where: Filter | None = None) -> int: ...

    async def find_one(self, where: Filter, *, session: Session | None = None, **kw: Any) -> Document | None:
        found = await self.find(where, limit=1, session=session, **kw)
        return found[0] if found else None


class DocumentStore(ABC):
    @abstractmethod
    def collection(self, name: str, indexes: Sequence[Index] = ()) -> Collection:
        """Name a collection and its indexes; call before ``start`` (indexes are made there)."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """All writes given this session commit together or not at all."""

    # Whether ``savepoint`` works: then several deliveries' effects can share one transaction (one commit)
    # and a failing one still undoes only its own writes (shared/context.py).
    savepoints = False

    def savepoint(self, session: Session) -> AbstractAsyncContextManager[None]:
        """Inside ``session``: the writes made in the block are undone, and the transaction carries on, if
        the block raises."""
        raise NotImplementedError(f"{type(self).__name__} has no savepoints")

    @abstractmethod
    async def is_healthy(self) -> bool: ...


def check_limit(limit: int) -> None:
    if not 0 < limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
