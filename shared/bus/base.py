"""The bus port: publish events, consume a queue, declare the topology.

Both adapters (RabbitMQ and in-process) give the same guarantees, checked by one contract suite:
topic routing, at-least-once delivery, ack only after the handler returns, redelivery of anything a
dead consumer had not acknowledged, and dead-lettering to ``<queue>.dead`` after the delivery limit.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from shared import telemetry
from shared.events import Event
from shared.waiting import wait_until_set

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]
# Told of an event a watch heard; called on the event loop, must not block (it wakes something up).
Heard = Callable[[Event], None]
# Deliveries before a failing message is dead-lettered, unless the settings say otherwise.
DEFAULT_DELIVERY_LIMIT = 5


@dataclass(frozen=True)
class QueueSpec:
    """One durable queue, its bindings on ``lhcie.events`` and its poison-message policy."""

    name: str
    bindings: tuple[str, ...]
    # None: the bus's limit (LHCIE_AMQP_DELIVERY_LIMIT); a queue names its own only to differ from it.
    delivery_limit: int | None = None

    def limit(self, default: int) -> int:
        return default if self.delivery_limit is None else self.delivery_limit

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"


class Retry(Exception):
    """A dependency is unavailable: try the same message again later, without counting it as poison."""

    def __init__(self, reason: str, *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class Reject(Exception):
    """The message can never succeed (it breaks the contract): dead-letter it now."""


class BusUnavailable(Exception):
    """The broker could not confirm a publish; ``published`` of a batch's events, in order, were confirmed."""

    def __init__(self, reason: str, *, published: int = 0) -> None:
        super().__init__(reason)
        self.published = published


class Consumer(ABC):
    @abstractmethod
    async def stop(self) -> None:
        """Stop taking messages, let in-flight handlers finish and ack, then detach."""

    @abstractmethod
    async def abort(self) -> None:
        """Detach at once, as a crashed process would: unacknowledged messages go back to the queue."""

    async def drain(self, timeout: float) -> bool:
        """``stop`` within ``timeout`` seconds: handlers still running then are cut off and their messages
        left unacknowledged, for redelivery. True if every in-flight message was settled in time."""
        stopping = asyncio.ensure_future(self.stop())
        done, _ = await asyncio.wait({stopping}, timeout=max(timeout, 0.0))
        if done:
            stopping.result()
            return True
        log.warning("bus.drain_cut_off timeout=%.1fs", timeout, extra={"code": "BUS007"})
        await self.abort()
        # ``stop`` was waiting for the handlers ``abort`` has just cancelled: it returns now.
        await asyncio.gather(stopping, return_exceptions=True)
        return False


class Watch(ABC):
    """A process's own, transient hearing of some events (``Bus.watch``)."""

    @abstractmethod
    async def stop(self) -> None:
        """Hear nothing more; whatever was on its way is dropped."""


class Bus(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def declare(self, queues: Sequence[QueueSpec]) -> None:
        """Create the exchanges and the queues (idempotent)."""

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Return only once the broker has the message durably (publisher confirm)."""

    async def publish_batch(self, events: Sequence[Event]) -> None:
        """Publish in order; on return every one is confirmed. Adapters that can confirm many at once
        (one transaction on the embedded bus) override it. ``BusUnavailable.published`` says how many
        of them were confirmed before the failure."""
        for n, event in enumerate(events):
            try:
                await self.publish(event)
            except BusUnavailable as exc:
                exc.published = n
                raise

    @abstractmethod
    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int = 16) -> Consumer: ...

    @abstractmethod
    async def watch(self, bindings: Sequence[str], heard: Heard) -> Watch:
        """Hear every event matching ``bindings`` published from now on, in this process alone: each watch
        gets its own copy (a fan-out, not competing consumers), nothing is kept while no one watches and
        nothing is redelivered. At most once and lossy by design: a watch wakes something that also polls
        (a replica's live streams hearing of another replica's alert), it never carries an effect."""

    @abstractmethod
    async def get(self, queue_name: str) -> bytes | None:
        """Take one message off a queue (operations: reading a dead-letter queue), or None if empty."""

    @abstractmethod
    async def peek(self, queue_name: str, limit: int) -> list[bytes]:
        """Up to ``limit`` messages of a queue, left where they are."""

    @abstractmethod
    async def replay(self, queue_name: str, limit: int) -> int:
        """Move up to ``limit`` messages of ``<queue>.dead`` back to ``<queue>`` (only that consumer sees them
        again); each leaves the dead-letter queue only once its requeueing is confirmed. Returns how many."""

    @abstractmethod
    async def is_healthy(self) -> bool: ...


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        head, rest = p[0], p[1:]
        if head == "#":
            return any(match(rest, k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (head == "*" or head == k[0]) and match(rest, k[1:])

    return match(pattern.split("."), routing_key.split("."))


RETRY_BACKOFF_START = 0.2
RETRY_BACKOFF_MAX = 15.0


def next_backoff(previous: float | None, hint: float | None) -> float:
    if hint is not None:
        return hint
    if previous is None:
        return RETRY_BACKOFF_START
    return min(previous * 2, RETRY_BACKOFF_MAX)


class Disposition:
    """What the bus does with a message after its handler: not an OperationOutcome."""

    ACK = "ack"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead-letter"


async def deliver(handler: Handler, body: bytes, queue: str, stopping: asyncio.Event) -> str:
    """Run one message through a handler and say what to do with it; shared by both adapters.

    ``Retry`` is retried here with backoff for as long as the consumer runs (a dependency outage is not
    the message's fault); any other exception requeues it and counts towards the delivery limit.
    """
    try:
        event = Event.from_bytes(body)
    except ValueError:
        log.warning("bus.malformed queue=%s", queue, extra={"code": "BUS001"})
        return Disposition.DEAD_LETTER
    delay: float | None = None
    while True:
        with telemetry.span_from_headers(
            f"{queue} process",
            event.traceparent,
            event.tracestate,
            attributes={"messaging.destination": queue, "messaging.message.id": event.id},
        ):
            try:
                await handler(event)
                return Disposition.ACK
            except Retry as exc:
                delay = next_backoff(delay, exc.after)
                log.warning(
                    "bus.retry queue=%s type=%s reason=%s in=%.1fs",
                    queue,
                    event.type,
                    exc,
                    delay,
                    extra={"code": "BUS002"},
                )
            except ValidationError as exc:
                log.error(
                    "bus.contract_violation queue=%s type=%s errors=%d",
                    queue,
                    event.type,
                    exc.error_count(),
                    extra={"code": "BUS005"},
                )
                return Disposition.DEAD_LETTER
            except Reject as exc:
                log.error("bus.reject queue=%s type=%s reason=%s", queue, event.type, exc, extra={"code": "BUS003"})
                return Disposition.DEAD_LETTER
            except Exception:
                log.exception("bus.handler_failed queue=%s type=%s", queue, event.type, extra={"code": "BUS004"})
                return Disposition.REQUEUE
        if await wait_until_set(stopping, delay):
            return Disposition.REQUEUE  # shutting down: hand the message back for another consumer
