"""Alert changes another replica committed, heard at once: each replica watches the bus for ``alert.*``
(an exclusive queue of its own on RabbitMQ) and wakes its live streams, which read the feed as they do
for a change of their own. Without it a console attached to one replica saw another's alert only at its
next poll (``LHCIE_NOTIFICATION_STREAM_POLL_SECONDS``, 1 s); the poll stays, for what a watch may lose
(a wake-up is at most once) and for feed entries no event announces (a breach risk resolved).
"""

from __future__ import annotations

import logging

from services.notification.live import Listeners
from services.notification.outgoing import Announced
from shared.bus import Bus
from shared.bus.base import Watch
from shared.events import Event
from shared.topology import NOTIFICATION_WATCH

log = logging.getLogger(__name__)


class OtherReplicas:
    """Wakes this process's streams when the bus carries an alert change another replica committed."""

    def __init__(self, bus: Bus, listeners: Listeners, announced: Announced) -> None:
        self._bus = bus
        self._listeners = listeners
        self._announced = announced
        self._watch: Watch | None = None
        self.heard = 0  # another replica's changes heard (tests, and a glance in a debugger)

    async def start(self) -> None:
        try:
            self._watch = await self._bus.watch(NOTIFICATION_WATCH, self._on_event)
        except Exception:
            # A broker that refuses the queue (permissions) leaves the poll: slower, nothing missed.
            log.exception("notification.watch_failed", extra={"code": "NOT006"})

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None

    def _on_event(self, event: Event) -> None:
        if event.id in self._announced:
            return  # ours: the commit that wrote it woke the streams, a second wake would make each read again
        self.heard += 1
        self._listeners.changed()
