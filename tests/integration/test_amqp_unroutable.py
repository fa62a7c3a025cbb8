"""An event the broker cannot route (mandatory, and no queue bound for its key) is not confirmed: the publish
fails with ``BusUnavailable``, so the outbox keeps its row and says so instead of deleting an event nobody
received. Before, the broker's basic.return was ignored and its confirm counted the event as published.
Today audit binds ``#``, so only a topology mistake can make an event unroutable: this is what then happens.
"""

from __future__ import annotations

import uuid

import pytest

from shared.bus import BusUnavailable, QueueSpec
from shared.bus.amqp import AmqpBus
from shared.events import Event, RoutingKey, WebhookFailed
from tests.contract.test_bus_contract import denied

pytestmark = pytest.mark.rabbitmq


async def test_an_unroutable_event_fails_its_publish_and_a_batch_counts_only_what_was_routed(amqp_url: str) -> None:
    bus = AmqpBus(amqp_url, connection_name=f"unroutable-{uuid.uuid4().hex[:8]}")
    await bus.start()
    try:
        with pytest.raises(BusUnavailable):
            await bus.publish(denied(1))  # nothing is bound in this vhost
        await bus.declare([QueueSpec(f"test.routed.{uuid.uuid4().hex[:8]}", (RoutingKey.ACCESS_DENIED.value,))])
        await bus.publish(denied(2))  # bound now: confirmed
        stray = Event.new(RoutingKey.WEBHOOK_FAILED, _failed(), source="urn:test", subject="s")  # still unbound
        with pytest.raises(BusUnavailable) as caught:
            await bus.publish_batch([denied(3), stray, denied(4)])
        assert caught.value.published == 1  # the outbox deletes the first only, and sends the rest again
    finally:
        await bus.close()


def _failed() -> WebhookFailed:
    return WebhookFailed(subscription_id="s", event_number=1, endpoint_host="127.0.0.1", attempts=1, reason="test")
