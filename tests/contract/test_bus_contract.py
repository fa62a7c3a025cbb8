"""One contract for the bus port, run against the embedded bus on SQLite, the in-memory bus and the real
RabbitMQ broker; the restart tests run on the two that keep messages across a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shared.bus import Bus, QueueSpec, Reject, Retry
from shared.bus.amqp import AmqpBus
from shared.bus.base import topic_matches
from shared.bus.memory import MemoryBus
from shared.bus.sqlite import SqliteBus
from shared.events import AccessDenied, Actor, Event, RoutingKey
from tests.helpers import eventually


def denied(n: int = 0) -> Event:
    payload = AccessDenied(
        actor=Actor(org="RAL", role="clinician", subject="dr@RAL"),
        resource=f"Binary/{n}",
        action="read",
        reason_code="no-isa",
        reason="no accepted ISA",
    )
    return Event.new(RoutingKey.ACCESS_DENIED, payload, source="urn:test", subject=str(n))


BusFactory = Callable[[], Bus]


ADAPTERS = ["sqlite", "memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
# The adapters that keep messages across a restart (the in-memory bus keeps nothing, by design).
DURABLE_ADAPTERS = ["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


@pytest.fixture(params=ADAPTERS)
async def new_bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusFactory]:
    """Unstarted buses; every call on the same storage (a restarted process); closed afterwards."""
    async for factory in _factory(request, tmp_path):
        yield factory


@pytest.fixture(params=DURABLE_ADAPTERS)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusFactory]:
    """As ``new_bus``, for the restart tests: only adapters that promise durability."""
    async for factory in _factory(request, tmp_path):
        yield factory


async def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusFactory]:
    made: list[Bus] = []

    def make() -> Bus:
        adapter: Bus
        if request.param == "sqlite":
            adapter = SqliteBus(tmp_path / "bus.sqlite3")
        elif request.param == "memory":
            adapter = MemoryBus()
        else:
            adapter = AmqpBus(request.getfixturevalue("session_amqp_url"), connection_name="contract-test")
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


@pytest.fixture
async def bus(new_bus: BusFactory) -> Bus:
    adapter = new_bus()
    await adapter.start()
    return adapter


def stored(n: int = 0) -> Event:
    """An event of another type; only routing looks at it, so the payload need not match."""
    return denied(n).model_copy(update={"type": RoutingKey.DOCUMENT_STORED})


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
    exact, wildcard, everything, other = (
        queue("access.denied"),
        queue("access.*"),
        queue("#"),
        queue("document.stored"),
    )
    await bus.declare([exact, wildcard, everything, other])
    inboxes = {q.name: Inbox() for q in (exact, wildcard, everything, other)}
    for q in (exact, wildcard, everything, other):
        await bus.consume(q, inboxes[q.name])
    event = denied()
    await bus.publish(event)
    for q in (exact, wildcard, everything):
        await eventually(lambda q=q: asyncio.sleep(0, inboxes[q.name].ids() == [event.id]))
    # A queue delivers in order: had the first event reached ``other``, it would arrive before this one.
    marker = stored(1)
    await bus.publish(marker)
    await eventually(lambda: asyncio.sleep(0, marker.id in inboxes[other.name].ids()))
    assert inboxes[other.name].ids() == [marker.id]


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


async def test_a_batch_arrives_whole_and_in_order(bus: Bus) -> None:
    # The outbox relay's call: RabbitMQ pipelines the confirms, which must not reorder or drop anything.
    q = queue("access.denied")
    await bus.declare([q])
    events = [denied(i) for i in range(60)]
    await bus.publish_batch(events)
    inbox = Inbox()
    await bus.consume(q, inbox)
    await eventually(lambda: asyncio.sleep(0, len(inbox.events) >= 60))
    assert inbox.ids() == [e.id for e in events]


async def test_a_watch_hears_what_matches_from_now_on_each_watch_its_own_copy(bus: Bus) -> None:
    # A replica's live streams hear of another replica's alert this way (services/notification/replicas.py).
    q = queue("access.denied")
    await bus.declare([q])
    earlier = denied(0)
    await bus.publish(earlier)  # before any watch: heard by none
    wide: list[Event] = []
    exact: list[Event] = []
    elsewhere: list[Event] = []
    wide_watch = await bus.watch(["access.*"], wide.append)
    await bus.watch(["access.denied"], exact.append)
    await bus.watch(["document.stored"], elsewhere.append)
    event = denied(1)
    await bus.publish(event)
    await eventually(lambda: asyncio.sleep(0, [e.id for e in wide] == [e.id for e in exact] == [event.id]))
    assert wide[0] == event
    # A watch takes nothing from the queues: the durable consumer still gets both.
    inbox = Inbox()
    await bus.consume(q, inbox)
    await eventually(lambda: asyncio.sleep(0, sorted(inbox.ids()) == sorted([earlier.id, event.id])))
    await wide_watch.stop()
    later = denied(2)
    await bus.publish(later)
    await eventually(lambda: asyncio.sleep(0, [e.id for e in exact] == [event.id, later.id]))
    assert [e.id for e in wide] == [event.id]  # stopped before ``later`` was published
    assert elsewhere == []


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
        await asyncio.sleep(3600)  # on purpose: it never finishes, so only abort() can end it

    dying = await bus.consume(q, hangs)
    event = denied()
    await bus.publish(event)
    await asyncio.wait_for(started.wait(), 10)
    await dying.abort()  # as a crashed process: no ack

    inbox = Inbox()
    await bus.consume(q, inbox)
    [again] = await eventually(lambda: asyncio.sleep(0, inbox.events))
    assert again.id == event.id


async def test_drain_settles_what_finishes_in_time_and_hands_back_the_rest(bus: Bus) -> None:
    """SIGTERM's drain: a handler that finishes within the limit is acked, one still running at the limit
    is cut off and its message redelivered; nothing new is taken meanwhile."""
    q = queue("access.denied", limit=5)
    quick, slow = denied(1), denied(2)
    started: dict[str, asyncio.Event] = {quick.id: asyncio.Event(), slow.id: asyncio.Event()}
    release_quick = asyncio.Event()
    finished: list[str] = []

    async def handler(event: Event) -> None:
        started[event.id].set()
        if event.id == quick.id:
            await release_quick.wait()
            finished.append(event.id)
        else:
            await asyncio.sleep(3600)  # on purpose: it never finishes, so only the drain limit can end it

    draining = await bus.consume(q, handler)
    await bus.publish(quick)
    await bus.publish(slow)
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
    drain = asyncio.create_task(draining.drain(1.0))
    release_quick.set()
    assert await asyncio.wait_for(drain, 10) is False  # the slow one was cut off
    assert finished == [quick.id]
    later = denied(3)
    await bus.publish(later)
    inbox = Inbox()
    await bus.consume(q, inbox)
    # ``later`` was published after the drain handed ``slow`` back: once it is here, a redelivered quick
    # one would be too.
    await eventually(lambda: asyncio.sleep(0, later.id in inbox.ids() and slow.id in inbox.ids()))
    assert sorted(inbox.ids()) == sorted([slow.id, later.id])  # the quick one was acked, not redelivered


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
    # Once a later message has gone the same way, a first one still circulating would have been tried again.
    later = denied(1)
    await bus.publish(later)
    assert Event.from_bytes(await eventually(dead)).id == later.id
    assert attempts.count(event.id) == count


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
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(event: Event) -> None:
        started.set()
        await release.wait()
        finished.append(event.id)

    consumer = await bus.consume(q, slow)
    event = denied()
    await bus.publish(event)
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(consumer.stop())
    for _ in range(20):  # let stop() run as far as it can: it must wait for the handler
        await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert finished == [event.id]
    inbox = Inbox()
    await bus.consume(q, inbox)
    # In order: a redelivered first event would arrive before this one.
    later = denied(1)
    await bus.publish(later)
    await eventually(lambda: asyncio.sleep(0, later.id in inbox.ids()))
    assert inbox.ids() == [later.id]  # the first was acked, not redelivered


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


async def crash(adapter: Bus) -> None:
    """Leave the broker as a killed process would: connection gone, nothing acknowledged or handed back."""
    if isinstance(adapter, SqliteBus):
        await adapter._worker.close()  # the file stays exactly as the last commit left it
    else:
        assert isinstance(adapter, AmqpBus) and adapter._connection is not None
        await adapter._connection.close()


async def restarted(new_bus: BusFactory) -> Bus:
    adapter = new_bus()
    await adapter.start()
    return adapter


async def test_queued_messages_survive_a_restart(durable: BusFactory) -> None:
    first = await restarted(durable)
    q = queue("access.denied")
    await first.declare([q])
    events = [denied(i) for i in range(5)]
    for e in events:
        await first.publish(e)
    await first.close()

    second = await restarted(durable)
    inbox = Inbox()
    await second.consume(q, inbox)
    await eventually(lambda: asyncio.sleep(0, len(inbox.events) == 5))
    assert inbox.ids() == [e.id for e in events]


async def test_publish_routes_to_queues_declared_before_the_restart(durable: BusFactory) -> None:
    first = await restarted(durable)
    q = queue("access.denied")
    await first.declare([q])
    await first.close()

    second = await restarted(durable)
    event = denied()
    await second.publish(event)  # nobody has declared anything in this process yet
    body = await eventually(lambda: second.get(q.name))
    assert Event.from_bytes(body).id == event.id


async def test_unacked_messages_of_a_crashed_process_are_redelivered_after_restart(durable: BusFactory) -> None:
    first = await restarted(durable)
    q = queue("access.denied", limit=5)
    release = asyncio.Event()
    taken: list[str] = []

    async def hangs(event: Event) -> None:
        taken.append(event.id)
        await release.wait()

    await first.consume(q, hangs)
    events = [denied(i) for i in range(3)]
    for e in events:
        await first.publish(e)
    await eventually(lambda: asyncio.sleep(0, len(taken) == 3))
    await crash(first)
    release.set()  # the handlers finish, but their acks go nowhere

    second = await restarted(durable)
    inbox = Inbox()
    await second.consume(q, inbox)
    await eventually(lambda: asyncio.sleep(0, len(inbox.events) == 3))
    assert sorted(inbox.ids()) == sorted(e.id for e in events)
    # Acked this time: a third process finds nothing (in order, a leftover would come before the marker).
    await second.close()
    third = await restarted(durable)
    again = Inbox()
    await third.consume(q, again)
    marker = denied(9)
    await third.publish(marker)
    await eventually(lambda: asyncio.sleep(0, marker.id in again.ids()))
    assert again.ids() == [marker.id]


async def test_a_restart_keeps_the_delivery_count_so_a_crash_loop_ends_in_the_dead_letter_queue(
    durable: BusFactory,
) -> None:
    q = queue("access.denied", limit=2)
    event = denied()
    attempts = 0
    for n in range(q.delivery_limit + 2):  # every process that takes it dies before acking
        adapter = await restarted(durable)
        release, seen = asyncio.Event(), asyncio.Event()

        async def dies_with_it(_: Event, seen: asyncio.Event = seen, release: asyncio.Event = release) -> None:
            seen.set()
            await release.wait()

        await adapter.consume(q, dies_with_it)
        if n == 0:
            await adapter.publish(event)

        async def taken_or_dead(adapter: Bus = adapter, seen: asyncio.Event = seen) -> bool:
            return seen.is_set() or bool(await adapter.peek(q.dead_letter_queue, 1))

        await eventually(taken_or_dead)
        if not seen.is_set():
            break
        attempts += 1
        await crash(adapter)
        release.set()

    final = await restarted(durable)
    await final.declare([q])
    body = await eventually(lambda: final.get(q.dead_letter_queue))
    assert Event.from_bytes(body).id == event.id
    # As for a failing handler: a bounded number of deliveries (RabbitMQ counts "more than" the limit).
    assert q.delivery_limit <= attempts <= q.delivery_limit + 1
    assert await final.get(q.name) is None
