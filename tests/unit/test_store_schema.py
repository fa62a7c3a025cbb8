"""Each service's declared collections (its ``collections.py``) are what the service opens, and
``lhcie store init`` creates them from that declaration without building an app."""

from __future__ import annotations

import sqlite3

import pytest
from aiohttp import web

from lhcie.services import SPECS
from shared.app_keys import RUNTIME
from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.lifecycle import CONTEXTS
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime
from shared.store.init import init_stores
from shared.store.sqlite import SqliteStore


def opened_by(settings: Settings, name: str) -> dict[str, set[object]]:
    """What the service names when installed into an app (nothing is started)."""
    app = web.Application()
    ports = Ports(bus=MemoryBus(), objects=FileObjectStore(settings.data_dir / "objects"))
    app[RUNTIME] = Runtime(settings=settings, ports=ports, services=(name,))
    SPECS[name].install(app)
    opened: dict[str, set[object]] = {}
    for ctx in app[CONTEXTS]:
        assert isinstance(ctx.store, SqliteStore)
        for collection, coll in ctx.store._collections.items():
            opened.setdefault(collection, set()).update(coll.indexes)
    return opened


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_declared_collections_are_the_ones_the_service_opens(settings: Settings, name: str) -> None:
    declared = {collection: set(indexes) for collection, indexes in SPECS[name].collections.items()}
    assert declared == opened_by(settings, name)


async def test_store_init_creates_the_declared_collections_and_indexes(settings: Settings) -> None:
    assert await init_stores(settings, [SPECS["intake"], SPECS["audit"]]) == ["intake", "audit"]
    for name in ("intake", "audit"):
        with sqlite3.connect(settings.service_db_path(name)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        # The SQLite adapter's naming: table c_<collection>, index c_<collection>_<index name>.
        expected_tables = {f"c_{collection}" for collection in SPECS[name].collections}
        expected_indexes = {
            f"c_{collection}_{index.name}"
            for collection, declared in SPECS[name].collections.items()
            for index in declared
        }
        assert expected_tables <= tables
        assert expected_indexes <= indexes
