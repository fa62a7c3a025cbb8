"""A SQLite store whose file another writer holds past the busy timeout (a backup, a long transaction)
is unavailable, not broken: ``StoreUnavailable`` (503 at the edge, a retry in place in a consumer).

Found while building the fault run's store outage (tests/faults, whose long profile locks a store past the
30 s busy timeout): before, the raw ``sqlite3.OperationalError: database is locked`` escaped, so the edge
answered 500 and a consumer's failure counted towards the dead-letter limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.store import StoreUnavailable
from shared.store.sqlite import SqliteStore


@pytest.fixture
def busy_timeout() -> float:
    return 0.2  # a lock held past it is an outage within the test's time


@contextmanager
def held_by_another_writer(path: Path) -> Iterator[None]:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_write_while_another_writer_holds_the_file_is_store_unavailable(
    store: SqliteStore, tmp_path: Path
) -> None:
    things = store.collection("things")
    await things.insert({"_id": "a", "n": 1})
    with held_by_another_writer(tmp_path / "svc.sqlite3"):
        with pytest.raises(StoreUnavailable):
            await things.insert({"_id": "b", "n": 2})
        with pytest.raises(StoreUnavailable):
            async with store.transaction() as session:
                await things.insert({"_id": "c", "n": 3}, session=session)
        assert await things.find_one({"_id": "a"}) == {"_id": "a", "n": 1}  # WAL: reads go on
    # Once the file is free again the same store writes, and nothing of the refused writes was kept.
    await things.insert({"_id": "b", "n": 2})
    assert await things.find_one({"_id": "b"}) == {"_id": "b", "n": 2}
    assert await things.find_one({"_id": "c"}) is None


async def test_a_full_disk_is_an_outage_too(store: SqliteStore) -> None:
    things = store.collection("things")
    await things.insert({"_id": "a", "n": 1})
    # The file may not grow (SQLITE_FULL, as a full disk says it): 503 and a retry, not a 500.
    pages = await store.write(None, lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await store.write(None, lambda c: c.execute(f"PRAGMA max_page_count={pages}"))
    with pytest.raises(StoreUnavailable):
        await things.insert_many([{"_id": f"big{i}", "pad": "x" * 4000} for i in range(50)])
    await store.write(None, lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    await things.insert({"_id": "b", "n": 2})
    assert await things.get("b") == {"_id": "b", "n": 2}
