"""Fixtures for the contract suites: the document store on each adapter.

SQLite always; SecantusDB (a MongoDB wire-protocol server) in every run, one server for the session with
a fresh database per test; a genuine MongoDB replica set when ``LHCIE_MONGODB_URL`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from shared.store import DocumentStore
from shared.store.mongo import MongoStore
from shared.store.sqlite import SqliteStore
from tests.contract.secantus import Secantus, secantus

GENUINE_MONGODB = os.environ.get("LHCIE_MONGODB_URL")
BACKENDS = ["sqlite", "secantus", *(["mongodb"] if GENUINE_MONGODB else [])]

StoreFactory = Callable[[], DocumentStore]


@pytest.fixture(scope="session")
def secantus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secantus]:
    with secantus(tmp_path_factory.mktemp("secantus") / "data") as server:
        yield server


@pytest.fixture(params=BACKENDS)
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Unstarted stores over one database (each call another client of the same data); closed afterwards.

    A test names its collections on a store and then starts it, as a service does.
    """
    made: list[DocumentStore] = []
    url = {"sqlite": None, "secantus": None, "mongodb": GENUINE_MONGODB}[request.param]
    if request.param == "secantus":
        url = request.getfixturevalue("secantus_server").url
    database = f"lhcie_contract_{uuid.uuid4().hex[:12]}"

    def make() -> DocumentStore:
        store: DocumentStore = (
            SqliteStore(tmp_path / "contract.sqlite3") if url is None else MongoStore(url, database=database)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    if url is not None:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url)
        try:
            await client.drop_database(database)
        finally:
            await client.close()
