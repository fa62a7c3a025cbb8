"""A consumer drained while its broker connection is down stays stopped when the connection comes back.

The fault run found it (issue 17): storage was stopped with SIGTERM just after a RabbitMQ restart. Its
consumer's channel was down, so the drain skipped the cancel, and the client library restored the channel
and its consumer once it had reconnected: a message then reached the handler after the store had closed
(``AssertionError: start() first``, a failed delivery counted towards the dead-letter limit).
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import pytest

from shared.bus import QueueSpec
from shared.bus.amqp import AmqpBus
from shared.events import Event, RoutingKey
from tests.contract.test_bus_contract import denied
from tests.helpers import eventually, queue_rows, rabbitmqctl

pytestmark = pytest.mark.rabbitmq


def drop_connections(vhost: str, name: str) -> int:
    """Close, from the broker's side, the connections the client named ``name`` (as a restart does)."""
    rows = [
        line.split("\t")
        for line in rabbitmqctl("-s", "list_connections", "pid", "vhost", "client_properties").splitlines()
    ]
    pids = [pid for pid, host, properties in rows if host == vhost and f'{{"connection_name","{name}"}}' in properties]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: the broker goes away")
    return len(pids)


def queue_state(vhost: str, queue: str) -> tuple[int, int, int]:
    """(ready, unacknowledged, consumers) of ``queue``."""
    row = next(
        r for r in queue_rows(vhost, "messages_ready", "messages_unacknowledged", "consumers") if r["name"] == queue
    )
    return int(row["messages_ready"]), int(row["messages_unacknowledged"]), int(row["consumers"])


async def test_a_consumer_drained_while_the_connection_is_down_is_not_restored(amqp_url: str) -> None:
    vhost = urlsplit(amqp_url).path.lstrip("/")
    name = f"drain-reconnect-{uuid.uuid4().hex[:8]}"
    q = QueueSpec(f"test.reconnect.{uuid.uuid4().hex[:8]}", (RoutingKey.ACCESS_DENIED.value,))
    bus = AmqpBus(amqp_url, connection_name=name)
    publisher = AmqpBus(amqp_url, connection_name=f"{name}-publisher")
    await bus.start()
    await publisher.start()
    try:
        await bus.declare([q])
        handled: list[str] = []

        async def handler(event: Event) -> None:
            handled.append(event.id)

        consumer = await bus.consume(q, handler)
        connection = bus._connection
        assert connection is not None
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())

        assert await asyncio.to_thread(drop_connections, vhost, name) == 1
        await eventually(lambda: asyncio.sleep(0, consumer._channel.is_closed))  # type: ignore[attr-defined]
        # SIGTERM now: the drain must end at once and leave nothing to restore.
        assert await asyncio.wait_for(consumer.drain(5), 10) is True
        waiting = denied(1)
        await publisher.publish(waiting)

        # Every channel the client restores is back before its reconnect callbacks run.
        await asyncio.wait_for(reconnected.wait(), 60)
        ready, unacked, consumers = await asyncio.to_thread(queue_state, vhost, q.name)
        assert (ready, unacked, consumers) == (1, 0, 0), "the drained consumer came back with the connection"
        assert handled == []
    finally:
        await publisher.close()
        await bus.close()
