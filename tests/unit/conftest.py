"""Fixtures shared by the unit tests. A module that needs a store of another shape defines its own
``store``, which takes the place of this one for that module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.store.sqlite import SqliteStore


@pytest.fixture
def busy_timeout() -> float:
    """Seconds a SQLite write waits for another writer's lock (a module testing lock timeouts lowers it)."""
    return 30.0


@pytest.fixture
async def store(tmp_path: Path, busy_timeout: float) -> AsyncIterator[SqliteStore]:
    """A started SQLite store at ``tmp_path / "svc.sqlite3"`` with one collection, ``things``."""
    s = SqliteStore(tmp_path / "svc.sqlite3", busy_timeout=busy_timeout)
    s.collection("things")
    await s.start()
    yield s
    await s.close()
