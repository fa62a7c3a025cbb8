"""The on-call engineer's view of a dead-letter queue: list without taking, then replay, on RabbitMQ."""

from __future__ import annotations

import os
import subprocess
import sys

import aio_pika
import pytest

from shared.bus.amqp import AmqpBus
from shared.topology import ALL_QUEUES, AUDIT
from tests.helpers import denial

pytestmark = pytest.mark.rabbitmq


def lhcie(amqp_url: str, *args: str) -> str:
    env = {**os.environ, "LHCIE_BUS": "amqp", "LHCIE_AMQP_URL": amqp_url}
    result = subprocess.run(
        [sys.executable, "-m", "lhcie.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


async def test_list_then_replay_dead_letters(amqp_url: str) -> None:
    bus = AmqpBus(amqp_url)
    await bus.start()
    try:
        await bus.declare(ALL_QUEUES)
        event = denial(subject="Binary/1")
        await bus.publish(event)
        body = await bus.get(AUDIT.name)
        assert body is not None
        # As if audit had given up on it: park it in audit.events.dead through the dead-letter exchange.
        channel = await bus._connection.channel()  # type: ignore[union-attr]
        exchange = await channel.get_exchange("lhcie.dead")
        await exchange.publish(aio_pika.Message(body), routing_key=AUDIT.name)
        await channel.close()

        listing = lhcie(amqp_url, "bus", "dead-letters", "audit.events")
        assert listing.splitlines()[0] == "1 message(s) shown from audit.events.dead (left in place)"
        assert event.id in listing and "access.denied" in listing and "subject=Binary/1" in listing
        assert "no-isa" not in listing  # payloads are never printed

        replayed = lhcie(amqp_url, "bus", "dead-letters", "audit.events", "--replay")
        assert replayed.strip() == "requeued 1 message(s) from audit.events.dead to audit.events"
        assert await bus.get(AUDIT.name) == body
        assert await bus.peek(AUDIT.dead_letter_queue, 10) == []
    finally:
        await bus.close()
