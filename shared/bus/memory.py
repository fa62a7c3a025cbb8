"""The in-process bus: RabbitMQ's routing, ack and dead-letter semantics inside one event loop.

It is the bus of the one-command local run. Messages live in memory, so a process crash loses what was
queued but not yet handled; the transactional outbox of each service (``shared/outbox.py``) republishes
anything whose publish was not confirmed, and the real broker is the answer for durability across
restarts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.bus.base import (
    DEFAULT_DELIVERY_LIMIT,
    Bus,
    Consumer,
    Disposition,
    Handler,
    Heard,
    QueueSpec,
    Watch,
    topic_matches,
)
from shared.bus.local import LocalConsumer, LocalWatches
from shared.events import Event


@dataclass
class _Message:
    body: bytes
    delivery_count: int = 0


@dataclass
class _Queue:
    spec: QueueSpec | None
    ready: deque[_Message] = field(default_factory=deque)
    available: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def put(self, message: _Message, *, front: bool = False) -> None:
        async with self.available:
            (self.ready.appendleft if front else self.ready.append)(message)
            self.available.notify()


class MemoryBus(Bus):
    def __init__(self, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        self._delivery_limit = delivery_limit
        self._queues: dict[str, _Queue] = {}
        self._consumers: set[_MemoryConsumer] = set()
        self._watches = LocalWatches()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()

    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        for spec in queues:
            if spec.name not in self._queues:
                self._queues[spec.name] = _Queue(spec)
            if spec.dead_letter_queue not in self._queues:
                self._queues[spec.dead_letter_queue] = _Queue(None)

    async def publish(self, event: Event) -> None:
        body = event.to_bytes()
        for queue in self._queues.values():
            if queue.spec and any(topic_matches(b, event.type) for b in queue.spec.bindings):
                await queue.put(_Message(body))
        self._watches.published([event])

    async def watch(self, bindings: Sequence[str], heard: Heard) -> Watch:
        return self._watches.add(bindings, heard)

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int = 16) -> Consumer:
        await self.declare([queue])
        consumer = _MemoryConsumer(self, queue, handler, prefetch)
        self._consumers.add(consumer)
        consumer.begin()
        return consumer

    async def get(self, queue_name: str) -> bytes | None:
        queue = self._queues.get(queue_name)
        if queue is None or not queue.ready:
            return None
        return queue.ready.popleft().body

    async def peek(self, queue_name: str, limit: int) -> list[bytes]:
        queue = self._queues.get(queue_name)
        return [m.body for m in list(queue.ready)[:limit]] if queue else []

    async def replay(self, queue_name: str, limit: int) -> int:
        moved = 0
        queue = self._queues.get(queue_name)
        target = self._queues[queue_name.removesuffix(".dead")]
        while queue is not None and queue.ready and moved < limit:
            await target.put(_Message(queue.ready.popleft().body))
            moved += 1
        return moved

    async def is_healthy(self) -> bool:
        return True

    async def _settle(self, spec: QueueSpec, message: _Message, outcome: str) -> None:
        if outcome == Disposition.ACK:
            return
        message.delivery_count += 1
        if outcome == Disposition.DEAD_LETTER or message.delivery_count >= spec.limit(self._delivery_limit):
            await self._queues[spec.dead_letter_queue].put(_Message(message.body))
        else:
            await self._queues[spec.name].put(message, front=True)


class _MemoryConsumer(LocalConsumer[_Message]):
    def __init__(self, bus: MemoryBus, spec: QueueSpec, handler: Handler, prefetch: int) -> None:
        super().__init__(spec, handler)
        self._bus = bus
        self._slots = asyncio.Semaphore(prefetch)

    async def _run(self) -> None:
        queue = self._bus._queues[self._spec.name]
        while not self._stopping.is_set():
            await self._slots.acquire()
            async with queue.available:
                while not queue.ready and not self._stopping.is_set():
                    await queue.available.wait()
                if self._stopping.is_set():
                    self._slots.release()
                    return
                message = queue.ready.popleft()
            self._dispatch(message)

    async def _settle(self, message: _Message, outcome: str) -> None:
        await self._bus._settle(self._spec, message, outcome)

    def _released(self) -> None:
        self._slots.release()

    async def _wake(self) -> None:
        queue = self._bus._queues[self._spec.name]
        async with queue.available:
            queue.available.notify_all()

    def _detach(self) -> None:
        self._bus._consumers.discard(self)
