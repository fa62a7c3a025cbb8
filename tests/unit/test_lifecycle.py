"""A consumer whose store is down retries in place: an outage never dead-letters a message."""

from __future__ import annotations

import asyncio

from shared.bus import QueueSpec
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.context import ServiceContext
from shared.events import Event, RoutingKey
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime
from shared.store import StoreUnavailable, WriteConflict
from tests.helpers import denial


async def test_store_outages_and_write_conflicts_are_retried_not_dead_lettered(settings: Settings) -> None:
    bus = MemoryBus()
    ctx = ServiceContext("probe", Runtime(settings=settings, ports=Ports(bus, FileObjectStore(settings.data_dir))))
    await ctx.start()
    queue = QueueSpec("probe.events", (RoutingKey.ACCESS_DENIED,), delivery_limit=2)
    failures = [StoreUnavailable("down"), WriteConflict("race"), StoreUnavailable("still down")]
    handled = asyncio.Event()

    async def handler(event: Event) -> None:
        if failures:
            raise failures.pop(0)
        handled.set()

    try:
        await ctx.consume(queue, handler)
        await bus.publish(denial())
        await asyncio.wait_for(handled.wait(), 20)
        assert failures == []
        assert await bus.get(queue.dead_letter_queue) is None  # more failures than the limit, none poison
    finally:
        await ctx.stop()
