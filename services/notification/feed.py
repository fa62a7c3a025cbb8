"""The alert feed: every change to an alert, numbered without gaps per deployment, for live consoles.

A console's SSE stream reads the feed after the last number it saw (``Last-Event-ID``), so a reconnect
loses nothing and a second replica's changes reach every console. The number is taken from a counter
with a compare-and-set inside the writer's transaction, so two processes never hand out the same one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.store import ASCENDING, Document, DocumentStore, Index, Session

COUNTER = "alert-feed"
T = TypeVar("T")


class CounterConflict(Exception):
    """Another writer took the number first; the caller's transaction is rolled back and retried."""


class Feed:
    def __init__(self, store: DocumentStore) -> None:
        self._entries = store.collection("alert_feed", [Index(("mdt", "seq")), Index(("seq",))])
        self._counters = store.collection("counters")

    async def append(self, *, mdt: str, alert_id: str, kind: str, at: str, session: Session) -> int:
        seq = await next_number(self._counters, COUNTER, session=session)
        await self._entries.insert(
            {"_id": f"{seq:012d}", "seq": seq, "mdt": mdt, "alert_id": alert_id, "kind": kind, "at": at},
            session=session,
        )
        return seq

    async def after(self, mdt: str, seq: int, *, limit: int = 200) -> list[Document]:
        return await self._entries.find({"mdt": mdt, "seq": {"$gt": seq}}, sort=[("seq", ASCENDING)], limit=limit)

    async def last(self) -> int:
        counter = await self._counters.get(COUNTER)
        return int(counter["value"]) if counter else 0


async def next_number(counters: Any, name: str, *, session: Session) -> int:
    current = await counters.get(name, session=session)
    if current is None:
        await counters.insert({"_id": name, "value": 1}, session=session)
        return 1
    value = int(current["value"]) + 1
    if not await counters.update({"_id": name, "value": value - 1}, {"value": value}, session=session):
        raise CounterConflict(name)
    return value


class Writer:
    """Runs a write that takes numbers (the feed's, a subscription's): again if another process took the
    next number first (its transaction was rolled back), then tells whoever waits for committed changes
    (the outbox relay, the live streams of this process)."""

    def __init__(self, *after_commit: Callable[[], None]) -> None:
        self._after_commit = after_commit

    async def __call__(self, work: Callable[[], Awaitable[T]]) -> T:
        for _ in range(20):
            try:
                result = await work()
            except CounterConflict:
                await asyncio.sleep(0.01)
                continue
            for hook in self._after_commit:
                hook()
            return result
        raise RuntimeError("feed counter contention did not settle")
