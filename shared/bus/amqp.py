"""The RabbitMQ bus (aio-pika): durable topic exchange, quorum queues, confirms, manual acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, DeliveryError
from aiormq.abc import FieldValue

from shared.bus.base import (
    DEFAULT_DELIVERY_LIMIT,
    Bus,
    BusUnavailable,
    Consumer,
    Disposition,
    Handler,
    Heard,
    QueueSpec,
    Watch,
    deliver,
)
from shared.events import CONTENT_TYPE, DEAD_LETTER_EXCHANGE, EXCHANGE, Event

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
# A watch's queue holds at most this many messages (its process stalled): the oldest go first.
WATCH_MAX_LENGTH = 1000


def watch_arguments() -> dict[str, FieldValue]:
    """A watch's queue: classic (a quorum queue cannot be exclusive), bounded, never durable."""
    return {"x-queue-type": "classic", "x-max-length": WATCH_MAX_LENGTH, "x-overflow": "drop-head"}


def queue_arguments(spec: QueueSpec, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> dict[str, FieldValue]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": spec.limit(delivery_limit),
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": spec.name,
        # At-least-once dead-lettering: a poison message is never dropped on its way to <queue>.dead.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class AmqpBus(Bus):
    def __init__(
        self, url: str, *, connection_name: str = "lhcie", delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    ) -> None:
        self._url = url
        self._delivery_limit = delivery_limit
        self._name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._publish_lock = asyncio.Lock()
        self._consumers: set[_AmqpConsumer] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": self._name}, timeout=10
        )
        # A message the broker returns (mandatory, no queue bound) fails its publish instead of counting as
        # confirmed: the outbox keeps it and says so, rather than deleting an event nobody received.
        self._publish_channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self._declare_exchanges(self._publish_channel)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @staticmethod
    async def _declare_exchanges(channel: AbstractChannel) -> AbstractExchange:
        await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        return await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)

    async def _declare_queue(self, channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
        exchange = await self._declare_exchanges(channel)
        dead = await channel.declare_queue(spec.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(DEAD_LETTER_EXCHANGE, routing_key=spec.name)
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=queue_arguments(spec, self._delivery_limit)
        )
        for binding in spec.bindings:
            await queue.bind(exchange, routing_key=binding)
        return queue

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        assert self._connection is not None, "start() first"
        async with self._connection.channel() as channel:
            for spec in queues:
                await self._declare_queue(channel, spec)

    async def publish(self, event: Event) -> None:
        assert self._exchange is not None, "start() first"
        message = aio_pika.Message(
            event.to_bytes(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            timestamp=event.time,
            app_id=event.source,
            headers={k: v for k, v in (("traceparent", event.traceparent), ("tracestate", event.tracestate)) if v},
        )
        try:
            # mandatory: an event no queue is bound for is an error, not a silent loss
            await self._exchange.publish(message, routing_key=event.type, mandatory=True, timeout=PUBLISH_TIMEOUT)
        except (DeliveryError, AMQPError, TimeoutError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"publish of {event.type} not confirmed: {type(exc).__name__}") from exc

    async def publish_batch(self, events: Sequence[Event]) -> None:
        # Pipelined: every message is on the wire before the first confirm is awaited, so a batch costs one
        # round trip to the broker instead of one per event. The channel's lock sends them in order; confirms
        # may come back in any order, and ``published`` counts the confirmed prefix (a later event that was
        # confirmed too is published again by the outbox; consumers drop it by event id).
        outcomes = await asyncio.gather(*(self.publish(event) for event in events), return_exceptions=True)
        for n, outcome in enumerate(outcomes):
            if isinstance(outcome, BusUnavailable):
                outcome.published = n
                raise outcome
            if isinstance(outcome, BaseException):
                raise outcome

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int = 16) -> Consumer:
        assert self._connection is not None, "start() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        amqp_queue = await self._declare_queue(channel, queue)
        consumer = _AmqpConsumer(self, channel, amqp_queue, queue, handler)
        await consumer.begin()
        self._consumers.add(consumer)
        return consumer

    async def watch(self, bindings: Sequence[str], heard: Heard) -> Watch:
        assert self._connection is not None, "start() first"
        channel = await self._connection.channel()
        exchange = await self._declare_exchanges(channel)
        # Exclusive and auto-delete: the broker drops it with this connection. Named by us, not the broker,
        # so that the robust connection declares the same queue again (with its bindings) after a reconnect.
        queue = await channel.declare_queue(
            f"{self._name}.watch.{uuid.uuid4().hex[:12]}",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments=watch_arguments(),
        )
        for binding in bindings:
            await queue.bind(exchange, routing_key=binding)
        watch = _AmqpWatch(channel, heard)
        # no_ack: a wake-up lost with a dead channel is made up by the watcher's poll.
        await queue.consume(watch.on_message, no_ack=True)
        return watch

    async def get(self, queue_name: str) -> bytes | None:
        assert self._connection is not None, "start() first"
        async with self._connection.channel() as channel:
            queue = await channel.get_queue(queue_name, ensure=True)
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                return None
            await message.ack()
            return message.body

    async def peek(self, queue_name: str, limit: int) -> list[bytes]:
        assert self._connection is not None, "start() first"
        bodies: list[bytes] = []
        # Taken without ack on a channel of their own: closing it hands every one back to the queue.
        async with self._connection.channel() as channel:
            queue = await channel.get_queue(queue_name, ensure=True)
            while len(bodies) < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
                bodies.append(message.body)
        return bodies

    async def replay(self, queue_name: str, limit: int) -> int:
        assert self._connection is not None, "start() first"
        moved = 0
        target = queue_name.removesuffix(".dead")
        async with self._connection.channel(publisher_confirms=True) as channel:
            queue = await channel.get_queue(queue_name, ensure=True)
            while moved < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
                # Straight to its own queue through the default exchange, confirmed before the ack below.
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=message.message_id,
                        type=message.type,
                        headers=message.headers,
                    ),
                    routing_key=target,
                    mandatory=True,
                    timeout=PUBLISH_TIMEOUT,
                )
                await message.ack()
                moved += 1
        return moved

    async def is_healthy(self) -> bool:
        return self._connection is not None and not self._connection.is_closed


class _AmqpWatch(Watch):
    def __init__(self, channel: AbstractChannel, heard: Heard) -> None:
        self._channel = channel
        self._heard = heard

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = Event.from_bytes(message.body)
        except ValueError:
            log.warning("bus.malformed queue=%s", message.routing_key, extra={"code": "BUS001"})
            return
        try:
            self._heard(event)
        except Exception:
            log.exception("bus.watch_failed type=%s", event.type, extra={"code": "BUS008"})

    async def stop(self) -> None:
        # Closing the channel ends the consumer; the queue goes with the connection (exclusive), or now if
        # it was its only consumer (auto-delete).
        with contextlib.suppress(AMQPError, RuntimeError):
            await self._channel.close()


class _AmqpConsumer(Consumer):
    def __init__(
        self,
        bus: AmqpBus,
        channel: AbstractChannel,
        queue: AbstractQueue,
        spec: QueueSpec,
        handler: Handler,
    ) -> None:
        self._bus = bus
        self._channel = channel
        self._queue = queue
        self._spec = spec
        self._handler = handler
        self._tag: str | None = None
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def begin(self) -> None:
        self._tag = await self._queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping.is_set():
            # Delivered after the drain began: by a channel the client was restoring after a broker
            # restart when the drain cancelled it. The handler's store may be closed already (the fault
            # run saw storage's consumer fail with "start() first"): handed back unhandled.
            with contextlib.suppress(AMQPError, RuntimeError):
                await message.nack(requeue=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            outcome = await deliver(self._handler, message.body, self._spec.name, self._stopping)
            if outcome == Disposition.ACK:
                await message.ack()
            elif outcome == Disposition.DEAD_LETTER:
                await message.reject(requeue=False)
            else:
                await message.nack(requeue=True)
        except AMQPError:
            # The channel died under us: the broker requeues the message itself.
            log.warning("bus.settle_failed queue=%s", self._spec.name, extra={"code": "BUS006"})
        finally:
            self._in_flight.discard(task)

    async def _cancel(self) -> None:
        self._stopping.set()
        if self._tag is not None:
            if self._channel.is_closed:
                # The connection is down (a broker restart): a cancel would wait for it to come back, and
                # the client would restore the consumer with the channel. Closing the channel on our side
                # tells the client not to restore it.
                await self._close_channel()
            else:
                with contextlib.suppress(AMQPError, RuntimeError):
                    await self._queue.cancel(self._tag)
            self._tag = None
        self._bus._consumers.discard(self)

    async def _close_channel(self) -> None:
        # Also when it is closed already: a robust channel closed by us is not reopened after a reconnect.
        with contextlib.suppress(AMQPError, RuntimeError):
            await self._channel.close()

    async def stop(self) -> None:
        await self._cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._close_channel()

    async def abort(self) -> None:
        self._stopping.set()
        for task in list(self._in_flight):
            task.cancel()
        self._bus._consumers.discard(self)
        # Closing the channel with messages unacknowledged makes the broker redeliver them.
        await self._close_channel()
