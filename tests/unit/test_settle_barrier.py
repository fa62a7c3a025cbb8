"""The tests' "nothing more arrives" barrier waits for work still inside a consumer and for work it leads
to, and returns once the bus is quiet."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.bus import QueueSpec
from shared.bus.sqlite import FILE_NAME, SqliteBus
from shared.events import Event, RoutingKey
from tests.contract.test_bus_contract import denied
from tests.helpers import settled

FIRST = QueueSpec("barrier.first", (RoutingKey.ACCESS_DENIED,))
SECOND = QueueSpec("barrier.second", (RoutingKey.DOCUMENT_STORED,))


async def test_settled_waits_for_a_slow_handler_and_the_message_it_publishes(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / FILE_NAME)
    await bus.start()
    finished: list[str] = []

    async def slow_then_forward(event: Event) -> None:
        await asyncio.sleep(0.3)  # on purpose: the work is still in the consumer when the barrier starts
        await bus.publish(event.model_copy(update={"type": RoutingKey.DOCUMENT_STORED}))

    async def record(event: Event) -> None:
        await asyncio.sleep(0.3)  # on purpose, likewise for the second hop
        finished.append(event.id)

    try:
        await bus.consume(FIRST, slow_then_forward)
        await bus.consume(SECOND, record)
        event = denied()
        await bus.publish(event)
        await settled(tmp_path)
        assert finished == [event.id]
    finally:
        await bus.close()
