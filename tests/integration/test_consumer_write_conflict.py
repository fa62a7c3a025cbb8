"""A consumer whose transaction loses a real write race on the MongoDB wire protocol (SecantusDB) retries the
message in place (the bus ``Retry`` intent): nothing is dead-lettered and the effect lands exactly once,
on top of the write it raced with. The race is a real one: a second client's transaction has written the
same document and stays open until the consumer has run into it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.bus import QueueSpec
from shared.bus.amqp import AmqpBus
from shared.config import BusKind, DocStoreKind
from shared.context import ServiceContext
from shared.events import Event, RoutingKey
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime
from shared.store import Session, WriteConflict
from shared.store.mongo import MongoStore
from tests.conftest import make_settings
from tests.contract.secantus import Secantus, secantus
from tests.helpers import denial, eventually

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Secantus]:
    with secantus(tmp_path / "secantus") as server:
        yield server


async def test_a_write_conflict_in_a_consumer_is_retried_not_dead_lettered(
    tmp_path: Path, database: Secantus, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path / "data",
        bus=BusKind.AMQP,
        amqp_url=SecretStr(amqp_url),
        doc_store=DocStoreKind.MONGODB,
        mongodb_url=SecretStr(database.url),
    )
    bus = AmqpBus(amqp_url, connection_name="write-conflict-test")
    await bus.start()
    ctx = ServiceContext("probe", Runtime(settings=settings, ports=Ports(bus, FileObjectStore(settings.data_dir))))
    counters = ctx.store.collection("counters")
    await ctx.start()
    await counters.insert({"_id": "c", "n": 0})
    # Another replica of the service: its own client of the same database.
    rival = MongoStore(database.url, database="lhcie_probe")
    rival_counters = rival.collection("counters")
    await rival.start()
    # One delivery: any failure other than the Retry intent would dead-letter the message at once.
    queue = QueueSpec("probe.conflicts", (RoutingKey.ACCESS_DENIED,), delivery_limit=1)
    conflicts = 0
    ran_into_it, handled = asyncio.Event(), asyncio.Event()

    async def handler(event: Event) -> None:
        nonlocal conflicts

        async def effect(session: Session) -> None:
            doc = await counters.get("c", session=session)
            assert doc is not None
            await counters.replace({"_id": "c", "n": doc["n"] + 1}, session=session)

        try:
            await ctx.once(event, effect)
        except WriteConflict:
            conflicts += 1
            if conflicts >= 2:  # retried once already, and still racing the open transaction
                ran_into_it.set()
            raise
        handled.set()

    rival_may_commit = asyncio.Event()

    async def rival_write() -> None:
        async with rival.transaction() as session:
            await rival_counters.replace({"_id": "c", "n": 100}, session=session)
            rival_wrote.set()
            await rival_may_commit.wait()

    rival_wrote = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="shared.bus.base")
    try:
        racing = asyncio.create_task(rival_write())
        await asyncio.wait_for(rival_wrote.wait(), 30)
        await ctx.consume(queue, handler)
        await bus.publish(denial())
        await asyncio.wait_for(ran_into_it.wait(), 60)
        assert not handled.is_set()
        rival_may_commit.set()
        await racing
        await asyncio.wait_for(handled.wait(), 60)
        # The consumer's effect ran once, after the rival's commit, and read what the rival wrote.
        assert await counters.get("c") == {"_id": "c", "n": 101}
        assert await ctx.store.collection("inbox").count() == 1
        retries = [r for r in caplog.records if getattr(r, "code", None) == "BUS002"]
        assert len(retries) == conflicts >= 2
        assert all("WriteConflict" in r.getMessage() for r in retries)

        async def acknowledged() -> bool:
            return await bus.peek(queue.name, 10) == []

        await eventually(acknowledged, timeout=30)
        assert await bus.get(queue.dead_letter_queue) is None
    finally:
        rival_may_commit.set()
        await ctx.stop()
        await rival.close()
        await bus.close()
