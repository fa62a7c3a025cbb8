"""The outbox relay publishes what its transactions committed from memory, handed over at COMMIT
(shared/outbox.py): no read of the table per commit, nothing published that a rollback (of a transaction or
of one delivery's savepoint) undid, and the table still read where it may hold events not handed over
(start, failures, rows another replica left)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import outbox as outbox_module
from shared.batches import Batches
from shared.bus import QueueSpec
from shared.bus.memory import MemoryBus
from shared.events import Event
from shared.outbox import Outbox
from shared.store import Session
from shared.store.sqlite import SqliteStore
from tests.helpers import denial, eventually

QUEUE = QueueSpec("probe", ("#",))


class Boom(Exception):
    pass


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus()
    await bus.start()
    await bus.declare([QUEUE])
    yield bus
    await bus.close()


async def received(bus: MemoryBus) -> list[str]:
    ids: list[str] = []
    while (body := await bus.get(QUEUE.name)) is not None:
        ids.append(Event.model_validate_json(body).id)
    return ids


async def test_committed_events_go_out_in_commit_order_without_reading_the_table(
    tmp_path: Path, bus: MemoryBus
) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite3")
    outbox = Outbox(store, bus)
    await store.start()
    outbox.start()
    # Once an event has gone out, the start's scan (which reads the table, for a crash's leftovers) is over.
    first = denial()
    async with store.transaction() as session:
        await outbox.add(first, session=session)

    async def first_out() -> bool:
        return first.id in await received(bus)

    await eventually(first_out)
    reads: list[str] = []
    store._reader.set_trace_callback(  # type: ignore[union-attr]
        lambda sql: "c_outbox" in sql and sql.lstrip().upper().startswith("SELECT") and reads.append(sql)
    )
    sent = [denial() for _ in range(12)]
    for start in range(0, 12, 3):
        async with store.transaction() as session:
            for event in sent[start : start + 3]:
                await outbox.add(event, session=session)
    got: list[str] = []

    async def all_out() -> bool:
        got.extend(await received(bus))
        return len(got) >= len(sent)

    await eventually(all_out)
    assert got == [e.id for e in sent]
    store._reader.set_trace_callback(None)  # type: ignore[union-attr]
    assert reads == []
    await eventually(lambda: _empty(outbox))  # and each left the table once confirmed
    await outbox.stop()
    await store.close()


async def test_nothing_a_rollback_undid_is_published(tmp_path: Path, bus: MemoryBus) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite3")
    inbox = store.collection("inbox")
    outbox = Outbox(store, bus)
    batches = Batches(store, inbox, outbox)
    await store.start()
    outbox.start()
    announced_then_failed, kept, kept_too = denial(), denial(), denial()

    async def announce(event: Event, session: Session) -> None:
        await outbox.add(event, session=session)

    async def announce_and_fail(session: Session) -> None:
        await outbox.add(announced_then_failed, session=session)
        raise Boom

    # One transaction, three savepoints: the failing delivery's event is undone with its writes.
    outcomes = await asyncio.gather(
        batches.apply(denial(), lambda s: announce(kept, s)),
        batches.apply(denial(), announce_and_fail),
        batches.apply(denial(), lambda s: announce(kept_too, s)),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [type(None), Boom, type(None)]
    # A whole transaction rolled back.
    rolled_back = denial()
    with pytest.raises(Boom):
        async with store.transaction() as session:
            await outbox.add(rolled_back, session=session)
            raise Boom
    got: set[str] = set()

    async def both_out() -> bool:
        got.update(await received(bus))
        return {kept.id, kept_too.id} <= got

    await eventually(both_out)
    await outbox.flush()
    got.update(await received(bus))
    assert got == {kept.id, kept_too.id}
    assert await outbox.pending() == 0
    await outbox.stop()
    await store.close()


async def test_rows_another_replica_left_are_published_by_a_scan(
    tmp_path: Path, bus: MemoryBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "SCAN_SECONDS", 0.2)
    path = tmp_path / "svc.sqlite3"
    running, crashed = SqliteStore(path), SqliteStore(path)
    relay = Outbox(running, bus)
    await running.start()
    relay.start()
    await eventually(lambda: _empty(relay))
    # The other replica commits an event and dies before its relay publishes it (its outbox never started).
    left = denial()
    await crashed.start()
    async with crashed.transaction() as session:
        await Outbox(crashed, bus).add(left, session=session)
    await crashed.close()
    got: list[str] = []

    async def out() -> bool:
        got.extend(await received(bus))
        return left.id in got

    await eventually(out, timeout=5)
    await eventually(lambda: _empty(relay))
    await relay.stop()
    await running.close()


async def _empty(outbox: Outbox) -> bool:
    return await outbox.pending() == 0
