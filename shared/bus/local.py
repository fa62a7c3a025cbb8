"""The consumer side both embedded buses share (in-process and SQLite): handlers in flight, stop and abort.

Each adapter says how it takes messages (``_run``), settles one (``_settle``), hears that a handler slot
is free (``_released``), wakes its waiting loop (``_wake``) and detaches from its bus (``_detach``); running
a message through its handler and the two ways of stopping are the same for both, and are RabbitMQ's.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import Generic, Protocol, TypeVar

from shared.bus.base import Consumer, Disposition, Handler, QueueSpec, deliver


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
