"""``lhcie store init``: create every service's collections and indexes, idempotently, without serving.

Each service declares them as data (``ServiceSpec.collections``, from its ``collections.py``); this opens
the service's store, names those collections, and starts and closes it (a store creates what is missing
when it starts). No app, no domain objects, no bus, no outbox relay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.config import Settings
from shared.store import open_store
from shared.store.schema import Schema


class Declared(Protocol):
    """What init needs of a ``ServiceSpec`` (named here so the store layer does not import the service layer)."""

    @property
    def name(self) -> str: ...

    @property
    def collections(self) -> Schema: ...


async def init_stores(settings: Settings, specs: Sequence[Declared]) -> list[str]:
    """Start and close each service's store with its declared collections; the services done."""
    done = []
    for spec in specs:
        store = open_store(settings, spec.name)
        for name, indexes in spec.collections.items():
            store.collection(name, indexes)
        await store.start()
        await store.close()
        done.append(spec.name)
    return done
