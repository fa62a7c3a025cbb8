"""One contract for the bus port, run against the in-process bus and the real RabbitMQ broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.bus import Bus, QueueSpec, Reject, Retry
from shared.bus.amqp import AmqpBus
from shared.bus.memory import MemoryBus
from shared.bus.base import topic_matches
from shared.events import Actor, AccessDenied, Event, RoutingKey
from tests.helpers import eventually


def denied(n: int = 0) -> Event:
    payload = AccessDenied(actor=Actor(org="RAL", role="clinician", subject="dr@RAL"), resource=f"Binary/{n}",
                           action="read", reason_code="no-isa", reason="no accepted ISA")
    return Event.new(RoutingKey.ACCESS_DENIED, payload, source="urn:test", subject=str(n))


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    adapter: Bus
    if request.param == "memory":
        adapter = MemoryBus()
    else:
        adapter = AmqpBus(request.getfixturevalue("session_amqp_url"), connection_name="contract-test")
    await adapter.start()
    yield adapter
    await adapter.close()


def queue(*bindings: str, limit: int = 3) -> QueueSpec:
    return QueueSpec(f"contract.{uuid.uuid4().hex[:8]}", bindings, delivery_limit=limit)


class Inbox:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def ids(self) -> list[str]:
        return [e.id for e in self.events]


async def test_topic_routing_delivers_to_matching_queues_only(bus: Bus) -> None:
    exact, wildcard, everything, other = (queue("access.denied"), queue("access.*"), queue("#"),
                                          queue("document.stored"))
    await bus.declare([exact, wildcard, everything, other])
    inboxes = {q.name: Inbox() for q in (exact, wildcard, everything, other)}
    for q in (exact, wildcard, everything, other):
        await bus.consume(q, inboxes[q.name])
    event = denied()
    await bus.publish(event)
    for q in (exact, wildcard, everything):
        await eventually(lambda q=q: asyncio.sleep(0, inboxes[q.name].ids() == [event.id]))
    await asyncio.sleep(0.2)
    assert inboxes[other.name].events == []


async def test_event_arrives_whole_with_its_cloudevents_attributes(bus: Bus) -> None:
    q = queue("access.denied")
    inbox = Inbox()
    await bus.consume(q, inbox)
    event = denied(7)
    await bus.publish(event)
    [received] = await eventually(lambda: asyncio.sleep(0, inbox.events))
    assert received == event
    assert received.specversion == "1.0" and received.type == "access.denied"
    assert received.payload() == event.payload()


async def test_published_before_consumer_starts_waits_in_the_declared_queue(bus: Bus) -> None:
    q = queue("access.denied")
    await bus.declare([q])
    events = [denied(i) for i in range(5)]
    for e in events:
        await bus.publish(e)
    inbox = Inbox()
    await bus.consume(q, inbox)
    await eventually(lambda: asyncio.sleep(0, len(inbox.events) == 5))
    assert sorted(inbox.ids()) == sorted(e.id for e in events)


async def test_unacked_message_is_redelivered_when_the_consumer_dies(bus: Bus) -> None:
    q = queue("access.denied", limit=5)
    started = asyncio.Event()

    async def hangs(event: Event) -> None:
        started.set()
        await asyncio.sleep(3600)

    dying = await bus.consume(q, hangs)
    event = denied()
    await bus.publish(event)
    await asyncio.wait_for(started.wait(), 10)
    await dying.abort()  # as a crashed process: no ack

    inbox = Inbox()
    await bus.consume(q, inbox)
    [again] = await eventually(lambda: asyncio.sleep(0, inbox.events))
    assert again.id == event.id


async def test_failing_message_is_dead_lettered_after_the_delivery_limit(bus: Bus) -> None:
    q = queue("access.denied", limit=3)
    attempts: list[str] = []

    async def always_fails(event: Event) -> None:
        attempts.append(event.id)
        raise RuntimeError("handler bug")

    await bus.consume(q, always_fails)
    event = denied()
    await bus.publish(event)

    async def dead() -> bytes | None:
        return await bus.get(q.dead_letter_queue)

    body = await eventually(dead)
    assert Event.from_bytes(body).id == event.id
    assert 1 <= len(attempts) <= q.delivery_limit + 1  # a bounded number of tries, never a hot loop
    count = len(attempts)
    await asyncio.sleep(0.3)
    assert len(attempts) == count


async def test_reject_dead_letters_at_once(bus: Bus) -> None:
    q = queue("access.denied", limit=5)
    attempts: list[str] = []

    async def rejects(event: Event) -> None:
        attempts.append(event.id)
        raise Reject("breaks the contract")

    await bus.consume(q, rejects)
    event = denied()
    await bus.publish(event)
    body = await eventually(lambda: bus.get(q.dead_letter_queue))
    assert Event.from_bytes(body).id == event.id
    assert attempts == [event.id]


async def test_message_breaking_the_contract_is_dead_lettered_not_retried(bus: Bus) -> None:
    q = queue("access.denied", limit=5)
    attempts: list[str] = []

    async def strict(event: Event) -> None:
        attempts.append(event.id)
        event.payload()  # raises pydantic.ValidationError for data that breaks the contract

    await bus.consume(q, strict)
    bogus = denied().model_copy(update={"data": {"unexpected": True}})
    await bus.publish(bogus)
    body = await eventually(lambda: bus.get(q.dead_letter_queue))
    assert Event.from_bytes(body).id == bogus.id
    assert attempts == [bogus.id]


async def test_retry_is_retried_in_place_until_it_succeeds_without_dead_lettering(bus: Bus) -> None:
    q = queue("access.denied", limit=2)
    calls: list[int] = []
    done = asyncio.Event()

    async def flaky(event: Event) -> None:
        calls.append(1)
        if len(calls) < 4:  # more failures than the delivery limit: a dependency outage is not poison
            raise Retry("object store unavailable", after=0.01)
        done.set()

    await bus.consume(q, flaky)
    await bus.publish(denied())
    await asyncio.wait_for(done.wait(), 10)
    assert len(calls) == 4
    assert await bus.get(q.dead_letter_queue) is None


async def test_stop_lets_in_flight_handlers_finish_and_ack(bus: Bus) -> None:
    q = queue("access.denied")
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(event: Event) -> None:
        await release.wait()
        finished.append(event.id)

    consumer = await bus.consume(q, slow)
    event = denied()
    await bus.publish(event)
    await asyncio.sleep(0.3)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished == [event.id]
    inbox = Inbox()
    await bus.consume(q, inbox)
    await asyncio.sleep(0.3)
    assert inbox.events == []  # it was acked, not redelivered


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("document.*", "document.stored", True),
        ("document.*", "document.stored.extra", False),
        ("#", "anything.at.all", True),
        ("policy.#", "policy.agreement.accepted", True),
        ("policy.#", "policy", True),
        ("*.stored", "document.stored", True),
        ("alert.raised", "alert.acknowledged", False),
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected




async def test_dead_letters_can_be_read_without_taking_them_and_replayed(bus: Bus) -> None:
    q = queue("access.denied", limit=5)
    fail = True
    handled: list[str] = []

    async def handler(event: Event) -> None:
        if fail:
            raise Reject("not yet")
        handled.append(event.id)

    consumer = await bus.consume(q, handler)
    events = [denied(i) for i in range(3)]
    for e in events:
        await bus.publish(e)

    async def all_dead() -> list[bytes] | None:
        found = await bus.peek(q.dead_letter_queue, 10)
        return found if len(found) == 3 else None

    await eventually(all_dead)
    again = await bus.peek(q.dead_letter_queue, 10)  # peeking leaves them there
    assert sorted(Event.from_bytes(b).id for b in again) == sorted(e.id for e in events)

    fail = False
    assert await bus.replay(q.dead_letter_queue, 2) == 2
    assert await bus.replay(q.dead_letter_queue, 10) == 1
    await eventually(lambda: asyncio.sleep(0, len(handled) == 3))
    assert sorted(handled) == sorted(e.id for e in events)
    assert await bus.peek(q.dead_letter_queue, 10) == []
    await consumer.stop()
