"""Durable timers for escalations: a row per timer; firing is one transaction with its effect.

The conditional update from ``pending`` to ``fired`` and the effect commit together, so with several
replicas exactly one fires a timer, and a crash leaves it pending to fire after the restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from services.care.clock import Clock, stamp
from shared.store import ASCENDING, Document, DocumentStore, Index, Session

log = logging.getLogger(__name__)

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"
Action = Callable[[Document, Session], Awaitable[None]]


class Timers:
    def __init__(self, store: DocumentStore, clock: Callable[[], Clock]) -> None:
        self._store = store
        self._rows = store.collection("timers", [Index(("status", "due")), Index(("subject",))])
        self._clock = clock
        self._actions: dict[str, Action] = {}

    def on(self, kind: str, action: Action) -> None:
        self._actions[kind] = action

    async def schedule(self, key: str, kind: str, due: datetime, *, subject: str, session: Session,
                       **data: Any) -> None:
        if await self._rows.get(key, session=session) is None:
            await self._rows.insert({"_id": key, "kind": kind, "due": stamp(due), "status": PENDING,
                                     "subject": subject, "data": data}, session=session)

    async def cancel_for(self, subject: str, *, session: Session) -> int:
        return await self._rows.update({"subject": subject, "status": PENDING}, {"status": CANCELLED},
                                       session=session)

    async def run_due(self) -> int:
        fired = 0
        now = stamp(self._clock().now())
        for row in await self._rows.find({"status": PENDING, "due": {"$lte": now}}, sort=[("due", ASCENDING)],
                                         limit=200):
            action = self._actions.get(row["kind"])
            if action is None:
                log.error("care.timer_unknown_kind kind=%s", row["kind"], extra={"code": "CAR020"})
                continue
            async with self._store.transaction() as session:
                won = await self._rows.update({"_id": row["_id"], "status": PENDING},
                                              {"status": FIRED, "fired": now}, session=session)
                if won:
                    await action(row, session)
            fired += bool(won)
        return fired
