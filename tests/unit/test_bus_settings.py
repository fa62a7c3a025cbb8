"""LHCIE_AMQP_DELIVERY_LIMIT reaches both buses, and the bus (not a consumer) owns the retry timing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.audit.consumers import handler as audit_handler
from shared.bus import Bus, QueueSpec, Retry, open_bus
from shared.bus.amqp import queue_arguments
from shared.config import BusKind
from shared.context import _outages_retry
from shared.events import AccessDenied, Actor, Event, RoutingKey
from shared.store import StoreUnavailable
from tests.conftest import make_settings
from tests.helpers import eventually

LIMIT = 2  # below the default of 5, so a limit that is not wired shows as extra attempts


def denied() -> Event:
    payload = AccessDenied(
        actor=Actor(org="RAL", role="clinician", subject="dr@RAL"),
        resource="Binary/1",
        action="read",
        reason_code="no-isa",
        reason="no accepted ISA",
    )
    return Event.new(RoutingKey.ACCESS_DENIED, payload, source="urn:test", subject="1")


async def attempts_before_dead_letter(bus: Bus) -> int:
    # No delivery_limit of its own: the queue takes the bus's, which comes from the settings.
    queue = QueueSpec(f"limit.{uuid.uuid4().hex[:8]}", (RoutingKey.ACCESS_DENIED,))
    attempts: list[str] = []

    async def always_fails(event: Event) -> None:
        attempts.append(event.id)
        raise RuntimeError("handler bug")

    consumer = await bus.consume(queue, always_fails)
    await bus.publish(denied())
    await eventually(lambda: bus.get(queue.dead_letter_queue))
    await consumer.stop()
    return len(attempts)


async def test_the_in_process_bus_dead_letters_after_the_configured_limit(tmp_path: Path) -> None:
    bus = open_bus(make_settings(tmp_path, amqp_delivery_limit=LIMIT))
    await bus.start()
    try:
        assert await attempts_before_dead_letter(bus) == LIMIT
    finally:
        await bus.close()


@pytest.mark.rabbitmq
async def test_rabbitmq_dead_letters_after_the_configured_limit(tmp_path: Path, session_amqp_url: str) -> None:
    bus = open_bus(
        make_settings(tmp_path, bus=BusKind.AMQP, amqp_url=SecretStr(session_amqp_url), amqp_delivery_limit=LIMIT)
    )
    await bus.start()
    try:
        # A quorum queue dead-letters once the delivery count passes x-delivery-limit: limit + 1 attempts.
        assert await attempts_before_dead_letter(bus) == LIMIT + 1
    finally:
        await bus.close()


def test_a_queue_may_still_name_its_own_limit() -> None:
    own = QueueSpec("q", ("#",), delivery_limit=9)
    assert queue_arguments(own, LIMIT)["x-delivery-limit"] == 9
    assert queue_arguments(QueueSpec("q", ("#",)), LIMIT)["x-delivery-limit"] == LIMIT


class _StoreDown:
    async def record(self, event: Event) -> Any:
        raise StoreUnavailable("down")


async def test_audit_leaves_the_retry_timing_to_the_bus() -> None:
    handle = audit_handler(_StoreDown())  # type: ignore[arg-type]  # only record() is reached
    # What the consumer runs: the context turns a store outage into Retry; a fixed delay of the audit
    # consumer's own would show here as ``after`` (it was 1.0 s, forever).
    with pytest.raises(Retry) as raised:
        await _outages_retry(handle)(denied())
    assert raised.value.after is None
