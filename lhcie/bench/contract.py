"""Scenario 3b, the message contract's floor: what one document's events cost when no service does any work.

Every document the exchange takes becomes three events (``document.received``, ``document.stored``,
``alert.raised``) published with confirms to the topic exchange and delivered to every queue
``shared/topology.py`` binds them to, each delivery acknowledged. This runs exactly that, through the
exchange's own bus adapter (``AmqpBus``: the same queues, arguments, envelope, confirms and acks), with
handlers that only pass the document on: storage's publishes ``document.stored`` on ``document.received``,
notification's ``alert.raised`` on ``document.stored``, as the services do; notification's replica watch
hears the alert too. One connection per service, all in the bench's process, on a private vhost.

What it measures is the part of the design no service code can remove: the broker's CPU per document and
the five AMQP clients' CPU per document, measured as the pipeline is (``/proc``, user + system). Their sum
bounds from below what a document costs this machine under this contract, so ``1,000 × cores / sum``
is the most documents a second the contract allows here even if every service's own work cost nothing.
The documents per second it reaches itself are capped by the one process its five clients share.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from lhcie.bench import trip
from lhcie.bench.cpu import cpu_seconds
from lhcie.bench.harness import RABBITMQ, broker_pid, rabbitmqctl
from shared.bus.amqp import AmqpBus
from shared.bus.base import QueueSpec, topic_matches
from shared.events import DocumentFacts, Event, RoutingKey
from shared.topology import AGREEMENTS, ALL_QUEUES, AUDIT, INTAKE, NOTIFICATION, NOTIFICATION_WATCH, STORAGE

TRIP = (RoutingKey.DOCUMENT_RECEIVED, RoutingKey.DOCUMENT_STORED, RoutingKey.ALERT_RAISED)
SERVICES: dict[str, QueueSpec] = {
    "intake": INTAKE,
    "storage": STORAGE,
    "notification": NOTIFICATION,
    "audit": AUDIT,
    "agreements": AGREEMENTS,
}


def deliveries_per_document(queues: tuple[QueueSpec, ...] = ALL_QUEUES) -> int:
    """How many queue deliveries the contract makes of one document's three events."""
    return sum(1 for key in TRIP for spec in queues if any(topic_matches(b, key) for b in spec.bindings))


class _Trips:
    """Counts each document's deliveries; a document is done when all of them were handled."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.counts: dict[str, int] = {}
        self.done = 0
        self.target = 0
        self.all_done = asyncio.Event()

    def handled(self, event: Event) -> None:
        document_id = event.correlationid or ""
        n = self.counts[document_id] = self.counts.get(document_id, 0) + 1
        if n == self.expected:
            self.done += 1
            if self.done >= self.target:
                self.all_done.set()


def _handler(name: str, bus: AmqpBus, trips: _Trips) -> Callable[[Event], Awaitable[None]]:
    """Storage's handler passes ``document.received`` on as ``document.stored``, notification's
    ``document.stored`` as ``alert.raised``; every handler counts its delivery."""

    async def handle(event: Event) -> None:
        document = DocumentFacts.model_validate(event.data["document"])
        if name == "storage" and event.type == RoutingKey.DOCUMENT_RECEIVED:
            await bus.publish(trip.stored(document, at=event.time))
        elif name == "notification" and event.type == RoutingKey.DOCUMENT_STORED:
            await bus.publish(trip.alert(document, str(uuid.uuid4())))
        trips.handled(event)

    return handle


async def run(*, documents: int, senders: int, prefetch: int, timeout: float) -> dict[str, Any]:
    """``documents`` trips, ``senders`` publishing ``document.received`` back to back, on a private vhost."""
    vhost = f"lhcie-bench-contract-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(rabbitmqctl, "add_vhost", vhost)
    buses: dict[str, AmqpBus] = {}
    try:
        await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@{RABBITMQ}/{vhost}"
        broker = await asyncio.to_thread(broker_pid)
        trips = _Trips(deliveries_per_document())
        for name in SERVICES:
            buses[name] = AmqpBus(url, connection_name=f"bench-contract-{name}")
            await buses[name].start()
        await buses["intake"].declare(ALL_QUEUES)
        for name, spec in SERVICES.items():
            await buses[name].consume(spec, _handler(name, buses[name], trips), prefetch=prefetch)
        await buses["notification"].watch(NOTIFICATION_WATCH, lambda _: None)

        async def trip_batch(count: int) -> tuple[float, float | None, float]:
            """Run ``count`` trips; the process's and the broker's CPU seconds and the wall time they took."""
            trips.target = trips.done + count
            trips.all_done.clear()
            ids = [str(uuid.uuid4()) for _ in range(count)]
            own0, broker0, t0 = time.process_time(), cpu_seconds(broker) if broker else None, time.monotonic()

            async def sender(mine: list[str]) -> None:
                for document_id in mine:
                    await buses["intake"].publish(trip.received(trip.facts(document_id)))

            await asyncio.gather(*(sender(ids[i::senders]) for i in range(senders)))
            await asyncio.wait_for(trips.all_done.wait(), timeout)
            elapsed = time.monotonic() - t0
            broker1 = cpu_seconds(broker) if broker else None
            broker_cpu = broker1 - broker0 if broker0 is not None and broker1 is not None else None
            return time.process_time() - own0, broker_cpu, elapsed

        await trip_batch(min(50, documents))  # warm-up: connections, channels, first queue segments
        clients, broker_cpu, elapsed = await trip_batch(documents)
    finally:
        for bus in buses.values():
            await bus.close()
        await asyncio.to_thread(rabbitmqctl, "delete_vhost", vhost)
    client_ms = clients * 1000 / documents
    broker_ms = broker_cpu * 1000 / documents if broker_cpu is not None else None
    floor_ms = client_ms + (broker_ms or 0.0)
    return {
        "kind": "the message contract through AmqpBus, no service work",
        "documents": documents,
        "senders": senders,
        "prefetch": prefetch,
        "publishes_per_document": len(TRIP),
        "deliveries_per_document": trips.expected,
        "docs_per_s": round(documents / max(elapsed, 1e-9), 2),
        "cpu_ms_per_document": {
            "clients": round(client_ms, 3),
            "broker": round(broker_ms, 3) if broker_ms is not None else None,
            "total": round(floor_ms, 3),
        },
        "cores": os.cpu_count(),
        # Every core's CPU-ms a second over the contract's own cost per document.
        "ceiling_docs_per_s_on_this_machine": round((os.cpu_count() or 1) * 1000 / floor_ms, 1)
        if broker_ms is not None
        else None,
    }
