"""The transactional outbox across a crash, on the real RabbitMQ, with the outbox on SQLite and SecantusDB.

A worker process (tests/integration/outbox_worker.py) commits a state change and its event together and
dies before the relay publishes; a normal start of the same service then publishes it. Downstream a
consumer applies each event through ``ServiceContext.once``: exactly one effect, even when the crash
came after the publish and before the outbox row was removed, so that the event goes out twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.bus import QueueSpec
from shared.bus.amqp import AmqpBus
from shared.config import BusKind, Settings
from shared.context import ServiceContext
from shared.events import Event
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime
from shared.store import Session, open_store
from tests.contract.secantus import secantus
from tests.helpers import PUBLISH_TAP, eventually, rabbitmq_settled
from tests.integration.outbox_worker import CRASHED

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "secantus"])
def mongodb_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with secantus(tmp_path / "secantus") as server:
        yield server.url


def worker(mode: str, data_dir: Path, amqp_url: str, mongodb_url: str | None, event_id: str = "") -> int:
    """Run the worker to its end (or its staged crash); its exit status."""
    command = [
        sys.executable,
        "-m",
        "tests.integration.outbox_worker",
        mode,
        "--data-dir",
        str(data_dir),
        "--amqp-url",
        amqp_url,
        "--event-id",
        event_id,
        *(["--mongodb-url", mongodb_url] if mongodb_url else []),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120)
    if done.returncode not in (0, CRASHED):
        raise AssertionError(f"worker {mode} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return done.returncode


class Downstream:
    """A consuming service: counts deliveries and applies each event's effect once, in its own store."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.effects = ctx.store.collection("effects")
        # Deliveries whose handling has finished (the effect applied, or the duplicate dropped).
        self.deliveries: list[str] = []

    async def handle(self, event: Event) -> None:
        async def effect(session: Session) -> None:
            await self.effects.insert({"_id": uuid.uuid4().hex, "event_id": event.id}, session=session)

        await self.ctx.once(event, effect)
        self.deliveries.append(event.id)


@pytest.fixture
async def downstream(tmp_path: Path, amqp_url: str) -> AsyncIterator[Downstream]:
    settings = Settings(data_dir=tmp_path / "downstream", bus=BusKind.AMQP, amqp_url=SecretStr(amqp_url))
    bus = AmqpBus(amqp_url, connection_name="outbox-crash-downstream")
    ctx = ServiceContext("downstream", Runtime(settings, Ports(bus, FileObjectStore(tmp_path / "objects"))))
    consumer = Downstream(ctx)
    await bus.start()
    queue = QueueSpec("crash-test.downstream", ("access.denied",), delivery_limit=3)
    # Declared before any worker runs, so nothing published is unroutable (the tap counts publishes).
    await bus.declare([queue, PUBLISH_TAP])
    await ctx.start()
    await ctx.consume(queue, consumer.handle)
    yield consumer
    await ctx.stop()
    await bus.close()


async def worker_state(data_dir: Path, mongodb_url: str | None) -> tuple[list[str], int]:
    """What the worker's own store holds: its recorded decisions and its unsent outbox rows."""
    settings = Settings(
        data_dir=data_dir, **({"doc_store": "mongodb", "mongodb_url": SecretStr(mongodb_url)} if mongodb_url else {})
    )
    store = open_store(settings, "worker")
    decisions, outbox = store.collection("decisions"), store.collection("outbox")
    await store.start()
    try:
        return [d["_id"] for d in await decisions.find({})], await outbox.count()
    finally:
        await store.close()


@pytest.mark.parametrize("crash", ["commit", "commit-publish"])
async def test_a_crash_between_commit_and_publish_loses_nothing_and_has_one_effect(
    tmp_path: Path, amqp_url: str, mongodb_url: str | None, downstream: Downstream, crash: str
) -> None:
    data_dir = tmp_path / "worker"
    event_id = str(uuid.uuid4())

    assert await asyncio.to_thread(worker, crash, data_dir, amqp_url, mongodb_url, event_id) == CRASHED
    # The state change and its event were committed together; the event has not been sent.
    assert await worker_state(data_dir, mongodb_url) == ([event_id], 1)

    async def outboxes() -> int:
        # Only the downstream's: the worker's outbox has no relay (its process has exited) when asked.
        return await downstream.ctx.outbox.pending()

    if crash == "commit":
        # The worker is dead: whatever it published is in the queue or already handled once this holds.
        await rabbitmq_settled(amqp_url, outboxes)
        assert downstream.deliveries == []

    assert await asyncio.to_thread(worker, "relay", data_dir, amqp_url, mongodb_url) == 0
    assert await worker_state(data_dir, mongodb_url) == ([event_id], 0)

    expected_deliveries = 2 if crash == "commit-publish" else 1
    await eventually(lambda: _at_least(downstream.deliveries, expected_deliveries), timeout=20)
    await rabbitmq_settled(amqp_url, outboxes)  # a third delivery would have been handled by now
    # Every delivery has been handled; a duplicate was dropped by the inbox: exactly one effect.
    assert downstream.deliveries == [event_id] * expected_deliveries
    assert [e["event_id"] for e in await downstream.effects.find({})] == [event_id]


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n
