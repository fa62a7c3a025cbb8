"""``lhcie store init``: create every service's collections and indexes, idempotently, without serving.

A service names its collections in its constructors (they are built through ``ServiceContext``) and its
store creates them in ``start``. So this installs each service into a bare application, as a process
would, takes the contexts ``mount`` made, and starts and closes just their stores: no HTTP, no
consumers, no outbox relay (a relay here would drain events meant for the real bus).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from shared.bus.memory import MemoryBus
from shared.config import Settings
from shared.keys import RUNTIME
from shared.lifecycle import CONTEXTS, ServiceContext
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime, ServiceSpec


def service_contexts(settings: Settings, spec: ServiceSpec) -> list[ServiceContext]:
    """The contexts a service builds when installed; nothing is opened or started."""
    app = web.Application()
    # Never started: the domain objects only keep references to the ports until their app starts.
    ports = Ports(bus=MemoryBus(), objects=FileObjectStore(settings.data_dir / "objects"))
    app[RUNTIME] = Runtime(settings=settings, ports=ports, services=(spec.name,))
    spec.install(app)
    return app.get(CONTEXTS, [])


async def init_stores(settings: Settings, specs: Sequence[ServiceSpec]) -> list[str]:
    """Start and close each service's store (which creates what is missing); the services done."""
    done = []
    for spec in specs:
        for ctx in service_contexts(settings, spec):
            await ctx.store.start()
            await ctx.store.close()
            done.append(ctx.name)
    return done
