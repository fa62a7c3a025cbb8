"""The consumer side both embedded buses share (in-process and SQLite): handlers in flight, stop and abort.

Each adapter says how it takes messages (``_run``), settles one (``_settle``), hears that a handler slot
is free (``_released``), wakes its waiting loop (``_wake``) and detaches from its bus (``_detach``); running
a message through its handler and the two ways of stopping are the same for both, and are RabbitMQ's.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from shared.bus.base import Consumer, Disposition, Handler, Heard, QueueSpec, Watch, deliver, topic_matches
from shared.events import Event

log = logging.getLogger(__name__)


class _Message(Protocol):
    @property
    def body(self) -> bytes: ...


M = TypeVar("M", bound=_Message)


class LocalConsumer(Consumer, Generic[M]):
    def __init__(self, spec: QueueSpec, handler: Handler) -> None:
        self._spec = spec
        self._handler = handler
        self._stopping = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], M] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name=f"consume {self._spec.name}")

    @abstractmethod
    async def _run(self) -> None:
        """Take messages and ``_dispatch`` each until ``_stopping`` is set."""

    @abstractmethod
    async def _settle(self, message: M, outcome: str) -> None: ...

    @abstractmethod
    def _released(self) -> None:
        """A handler finished: its slot is free."""

    @abstractmethod
    async def _wake(self) -> None:
        """Let a loop waiting for messages or for a slot see that the consumer is stopping."""

    @abstractmethod
    def _detach(self) -> None: ...

    def _dispatch(self, message: M) -> None:
        task = asyncio.create_task(self._handle(message))
        self._in_flight[task] = message

    async def _handle(self, message: M) -> None:
        try:
            outcome = await deliver(self._handler, message.body, self._spec.name, self._stopping)
            await self._settle(message, outcome)
        finally:
            if (task := asyncio.current_task()) is not None:
                self._in_flight.pop(task, None)
            self._released()

    async def _halt_loop(self) -> None:
        self._stopping.set()
        await self._wake()
        if self._loop_task:
            await self._loop_task
        self._detach()

    async def stop(self) -> None:
        await self._halt_loop()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def abort(self) -> None:
        self._stopping.set()
        unacked = list(self._in_flight.items())
        for task, _ in unacked:
            task.cancel()
        await asyncio.gather(*(t for t, _ in unacked), return_exceptions=True)
        # A dead consumer's unacknowledged messages go back to the queue, counted as a delivery,
        # exactly as RabbitMQ returns them when a channel closes.
        for _, message in unacked:
            await self._settle(message, Disposition.REQUEUE)
        await self._halt_loop()


class LocalWatches:
    """The watches of an embedded bus: its publishes happen in this process, so a watch is told of each
    matching event once it is committed, as RabbitMQ hands it to an exclusive queue of the process."""

    def __init__(self) -> None:
        self._watches: set[_LocalWatch] = set()

    def add(self, bindings: Sequence[str], heard: Heard) -> Watch:
        watch = _LocalWatch(self, tuple(bindings), heard)
        self._watches.add(watch)
        return watch

    def discard(self, watch: _LocalWatch) -> None:
        self._watches.discard(watch)

    def published(self, events: Sequence[Event]) -> None:
        for watch in list(self._watches):
            for event in events:
                watch.hear(event)


class _LocalWatch(Watch):
    def __init__(self, watches: LocalWatches, bindings: tuple[str, ...], heard: Heard) -> None:
        self._watches = watches
        self._bindings = bindings
        self._heard = heard

    def hear(self, event: Event) -> None:
        if any(topic_matches(b, event.type) for b in self._bindings):
            try:
                self._heard(event)
            except Exception:  # a watcher's fault must not fail the publish that told it
                log.exception("bus.watch_failed type=%s", event.type, extra={"code": "BUS008"})

    async def stop(self) -> None:
        self._watches.discard(self)
