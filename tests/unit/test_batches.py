"""Deliveries whose effects share one transaction (shared/batches.py, ``ServiceContext.once(shared=True)``):
one COMMIT for the deliveries waiting together, each effect applied exactly once, a failing one undone and
failed alone, and nothing reported applied that is not durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.batches import Batches
from shared.bus.memory import MemoryBus
from shared.events import Event
from shared.outbox import Outbox
from shared.store import Session
from shared.store.sqlite import SqliteStore
from tests.helpers import denial


class Boom(Exception):
    pass


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SqliteStore(tmp_path / "probe.sqlite")
    yield store
    await store.close()


async def open_batches(store: SqliteStore) -> tuple[Batches, list[str]]:
    inbox = store.collection("inbox")
    store.collection("effects")
    await store.start()
    commits: list[str] = []
    store._writer.set_trace_callback(  # type: ignore[union-attr]
        lambda sql: sql.startswith("COMMIT") and commits.append(sql)
    )
    return Batches(store, inbox, Outbox(store, MemoryBus())), commits


async def test_deliveries_waiting_together_share_one_commit_and_each_lands_once(store: SqliteStore) -> None:
    batches, commits = await open_batches(store)
    effects = store.collection("effects")
    events = [denial() for _ in range(20)]

    def effect_of(e: Event):  # type: ignore[no-untyped-def]
        async def effect(session: Session) -> str:
            await effects.insert({"_id": e.id}, session=session)
            return e.id

        return effect

    results = await asyncio.gather(*(batches.apply(e, effect_of(e)) for e in events))
    assert results == [e.id for e in events]
    assert await effects.count() == 20
    # The first writes alone; the other 19 queued behind it and were written together.
    assert len(commits) == 2
    # Redelivered (all of them, at once): skipped by the inbox, nothing applied twice.
    again = await asyncio.gather(*(batches.apply(e, effect_of(e)) for e in events))
    assert again == [None] * 20
    assert await effects.count() == 20


async def test_a_failing_effect_is_undone_and_fails_alone(store: SqliteStore) -> None:
    batches, _ = await open_batches(store)
    effects = store.collection("effects")
    good, bad, after = denial(), denial(), denial()

    async def write(e: Event, session: Session) -> None:
        await effects.insert({"_id": e.id}, session=session)

    async def fails(session: Session) -> None:
        await effects.insert({"_id": bad.id}, session=session)
        raise Boom

    outcomes = await asyncio.gather(
        batches.apply(denial(), lambda s: write(denial(), s)),  # holds the writer while the three queue
        batches.apply(good, lambda s: write(good, s)),
        batches.apply(bad, fails),
        batches.apply(after, lambda s: write(after, s)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], Boom)
    assert outcomes[1] is None and outcomes[3] is None
    assert await effects.get(good.id) and await effects.get(after.id)
    # Its writes and its inbox row are undone: its redelivery applies it.
    assert await effects.get(bad.id) is None
    assert await store.collection("inbox").get(bad.id) is None
    assert await batches.apply(bad, lambda s: write(bad, s)) is None
    assert await effects.get(bad.id) is not None


async def test_when_the_commit_fails_no_delivery_of_the_batch_is_reported_applied(store: SqliteStore) -> None:
    batches, _ = await open_batches(store)
    effects = store.collection("effects")
    first, second = denial(), denial()
    hold = asyncio.Event()

    entered = asyncio.Event()

    async def held(session: Session) -> None:
        await effects.insert({"_id": first.id}, session=session)
        entered.set()
        await hold.wait()

    async def breaks_the_transaction(session: Session) -> None:
        await effects.insert({"_id": second.id}, session=session)
        # What SQLite does by itself on an I/O error or a full disk: the whole transaction is rolled back.
        await store.write(session, lambda c: c.execute("ROLLBACK"))

    third = denial()
    leader = asyncio.ensure_future(batches.apply(first, held))
    await asyncio.wait_for(entered.wait(), 30)  # its batch (of one) is taken and its transaction begun
    queued = [
        asyncio.ensure_future(batches.apply(second, breaks_the_transaction)),
        asyncio.ensure_future(batches.apply(third, lambda s: effects.insert({"_id": third.id}, session=s))),
    ]
    hold.set()
    assert await leader is None
    outcomes = await asyncio.gather(*queued, return_exceptions=True)
    # Neither is acked: the transaction's COMMIT failed, so both go back to the bus.
    assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
    # The third's write would have committed on its own, outside any transaction: refused instead.
    assert await effects.get(second.id) is None and await effects.get(third.id) is None
    assert await store.collection("inbox").count() == 1  # the first's, committed alone before them
