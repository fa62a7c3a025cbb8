"""Durable timers: escalations and checks that fire after a restart, once, with replicas (notification's
alert escalations and breach-risk checks, care's transfer and discharge escalations).

A timer is a row in the service's ``timers`` collection. Firing it is one transaction: a conditional update
from ``pending`` to ``fired`` and the effect it guards (the state change and its outbox event). Whichever
process wins the update fires it; the loser updates nothing and does nothing; a crash rolls both back, so
the timer stays pending and fires after the restart. No lease is needed because the claim and the effect
commit together.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from shared.clock import Clock, stamp
from shared.store import ASCENDING, Document, DocumentStore, Index, Session

log = logging.getLogger(__name__)

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"
Action = Callable[[Document, Session], Awaitable[None]]


class Timers:
    def __init__(self, store: DocumentStore, clock: Clock) -> None:
        self._store = store
        self._rows = store.collection("timers", [Index(("status", "due")), Index(("subject",))])
        self.clock = clock
        self._actions: dict[str, Action] = {}

    def on(self, kind: str, action: Action) -> None:
        self._actions[kind] = action

    async def schedule(
        self, key: str, kind: str, due: datetime, *, subject: str, session: Session, **data: Any
    ) -> None:
        """Create the timer ``key`` unless it exists (scheduling is idempotent)."""
        if await self._rows.get(key, session=session) is None:
            await self._rows.insert(
                {"_id": key, "kind": kind, "due": stamp(due), "status": PENDING, "subject": subject, "data": data},
                session=session,
            )

    async def cancel_for(self, subject: str, *, session: Session) -> int:
        return await self._rows.update({"subject": subject, "status": PENDING}, {"status": CANCELLED}, session=session)

    async def pending(self) -> list[Document]:
        return await self._rows.find({"status": PENDING}, sort=[("due", ASCENDING)], limit=1000)

    async def run_due(self) -> int:
        """Fire every timer due now; returns how many this process fired."""
        fired = 0
        now = stamp(self.clock.now())
        for row in await self._rows.find(
            {"status": PENDING, "due": {"$lte": now}}, sort=[("due", ASCENDING)], limit=200
        ):
            action = self._actions.get(row["kind"])
            if action is None:
                log.error("timers.unknown_kind kind=%s", row["kind"], extra={"code": "TIM001"})
                continue
            async with self._store.transaction() as session:
                won = await self._rows.update(
                    {"_id": row["_id"], "status": PENDING}, {"status": FIRED, "fired": now}, session=session
                )
                if won:
                    await action(row, session)
            if won:
                fired += 1
        return fired
