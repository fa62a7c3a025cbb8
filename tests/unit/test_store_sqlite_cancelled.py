"""A SQLite transaction cancelled half-way (a consumer's task when the broker drops its channel: aio-pika
cancels every callback in flight; a drain past its limit) ends whole: committed or rolled back, never left
open on the store's one writer connection.

The fault run found it (issue 17): after a RabbitMQ restart, intake answered a search with 500. The
cancelled task had stopped waiting for its BEGIN IMMEDIATE (the writer thread runs on whatever the event
loop does) before the thread had said the transaction began, so nothing rolled it back: the thread went
on, began, wrote and left the transaction open. Every later transaction of that process then failed with
``OperationalError: cannot start a transaction within a transaction``, which the edge answers 500, and
nothing written since was ever committed. A COMMIT cancelled before the thread reached it was dropped the
same way.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from shared.store.sqlite import SqliteStore
from tests.helpers import eventually


def queued_on_writer(store: SqliteStore) -> int:
    """Jobs waiting for the writer thread (not the one it runs)."""
    return store._write_thread._work_queue.qsize()


def committed(path: Path, key: str) -> bool:
    """Seen by another connection: committed, not merely written inside an open transaction."""
    other = sqlite3.connect(path)
    try:
        return other.execute("SELECT 1 FROM c_things WHERE id = ?", (key,)).fetchone() is not None
    finally:
        other.close()


async def goes_on(store: SqliteStore, path: Path) -> None:
    """The store still writes: a new transaction commits."""
    things = store.collection("things")
    async with store.transaction() as session:
        await things.insert({"_id": "after"}, session=session)
    assert committed(path, "after")


async def test_a_transaction_cancelled_while_waiting_for_the_write_lock_is_rolled_back(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "svc.sqlite3"
    things = store.collection("things")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the file: the BEGIN waits on the busy timeout

    async def write() -> None:
        async with store.transaction() as session:
            await things.insert({"_id": "cancelled"}, session=session)

    task = asyncio.create_task(write())
    # The writer thread has taken the BEGIN (nothing queued, a transaction active) and is waiting inside it.
    await eventually(lambda: asyncio.sleep(0, store._active is not None and queued_on_writer(store) == 0))
    task.cancel()
    other.execute("ROLLBACK")  # the file is free again: the BEGIN the cancelled task handed over goes ahead
    other.close()
    with pytest.raises(asyncio.CancelledError):
        await task

    await goes_on(store, path)
    assert not committed(path, "cancelled")
    assert await things.get("cancelled") is None


async def test_a_transaction_cancelled_before_its_commit_ran_ends_whole(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "svc.sqlite3"
    things = store.collection("things")
    gate = threading.Event()

    async def write() -> None:
        async with store.transaction() as session:
            await things.insert({"_id": "cancelled"}, session=session)
            # The writer thread is busy with something else when the COMMIT is handed to it.
            store._write_thread.submit(gate.wait, 30)

    task = asyncio.create_task(write())
    await eventually(lambda: asyncio.sleep(0, queued_on_writer(store) == 1))  # the COMMIT, behind the gate
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    await goes_on(store, path)
    # Committed or rolled back, but whole: the insert is there only if the transaction committed.
    assert committed(path, "cancelled") == (await things.get("cancelled") is not None)
