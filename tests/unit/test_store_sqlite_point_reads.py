"""Reads of one row by its key, outside a transaction, run on the event loop (``SqliteStore.read_point``):
no hop to the reader thread, which cost more CPU than the read (the consumers' policy and document look-ups).
A lock that would make such a read wait never holds the loop: the read goes to the reader thread instead."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "svc.sqlite3", busy_timeout=0.5)
    s.collection("things")
    await s.start()
    yield s
    await s.close()


async def test_a_read_by_key_does_not_go_to_the_reader_thread(store: SqliteStore) -> None:
    things = store.collection("things")
    await things.insert({"_id": "a", "n": 1})
    on_thread: list[str] = []
    store._reader.set_trace_callback(on_thread.append)  # type: ignore[union-attr]
    assert await things.get("a") == {"_id": "a", "n": 1}
    assert await things.get("missing") is None
    assert on_thread == []
    # Inside a transaction it reads through the session, seeing the transaction's own writes.
    async with store.transaction() as session:
        await things.insert({"_id": "b", "n": 2}, session=session)
        assert await things.get("b", session=session) == {"_id": "b", "n": 2}
        assert await things.get("b") is None  # not committed yet
    assert await things.get("b") == {"_id": "b", "n": 2}
    assert on_thread == []


async def test_a_point_read_that_meets_a_lock_goes_to_the_reader_thread(store: SqliteStore, tmp_path: Path) -> None:
    things = store.collection("things")
    await things.insert({"_id": "a", "n": 1})
    # The loop's reader never waits for a lock ...
    assert store._point_reader.execute("PRAGMA busy_timeout").fetchone() == (0,)  # type: ignore[union-attr]
    # ... and a read it cannot make at once is made by the reader thread, which waits as any read does. In
    # WAL mode readers are kept out only in rare moments (a WAL file being recovered); here the loop's
    # reader is pointed at a file another connection holds exclusively, so its read meets SQLITE_BUSY.
    held = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(held, isolation_level=None)
    holder.execute("CREATE TABLE c_things (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    holder.execute("BEGIN EXCLUSIVE")
    blocked = sqlite3.connect(held, isolation_level=None, timeout=0, check_same_thread=False)
    own, store._point_reader = store._point_reader, blocked
    on_thread: list[str] = []
    store._reader.set_trace_callback(on_thread.append)  # type: ignore[union-attr]
    try:
        assert await things.get("a") == {"_id": "a", "n": 1}
        assert any("c_things" in sql for sql in on_thread)
    finally:
        store._point_reader = own
        blocked.close()
        holder.execute("ROLLBACK")
        holder.close()
