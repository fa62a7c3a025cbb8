"""How a service plugs into a process: its name, its routes and lifecycle, its CapabilityStatement part.

``lhcie serve <name>`` builds an app with one service; ``lhcie run`` builds one app with all five, so the
URL space is the same in both (docs/architecture.md, Public HTTP API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.auth import EmbeddedIssuer, TokenVerifier
from shared.bus import Bus
from shared.config import Settings
from shared.objects import ObjectStore
from shared.openapi import Operation
from shared.store.schema import Schema

if TYPE_CHECKING:
    # Only for annotations: a domain module reaches Runtime through ServiceContext and must not load aiohttp.
    from aiohttp import web


@dataclass
class Ports:
    """The process-wide adapters; each service opens its own document store (it owns its data)."""

    bus: Bus
    objects: ObjectStore


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    # Adds the service's routes and its cleanup context (store, outbox, consumers) to the app.
    install: Callable[[web.Application], None]
    # CapabilityStatement.rest[0].resource entries this service serves.
    capability: tuple[dict[str, Any], ...] = ()
    # CapabilityStatements the service implements (``instantiates``) and whole-system interactions it serves.
    instantiates: tuple[str, ...] = ()
    system_interactions: tuple[str, ...] = ()
    # The collections and indexes the service opens, as data: ``lhcie store init`` creates them from this.
    collections: Schema = field(default_factory=dict)
    # Its routes as /openapi.json describes them (tests/unit/test_openapi.py holds them equal to the router).
    operations: tuple[Operation, ...] = ()
    # Paths served without a token (exact), and prefixes under which everything is: each with its reason.
    public_paths: frozenset[str] = frozenset()
    public_prefixes: tuple[str, ...] = ()


HealthCheck = Callable[[], Awaitable[bool]]


@dataclass
class Health:
    checks: dict[str, HealthCheck] = field(default_factory=dict)
    # Set when the process starts stopping: readiness fails first, so traffic goes elsewhere while it drains.
    draining: bool = False

    def add(self, name: str, check: HealthCheck) -> None:
        self.checks[name] = check

    async def failing(self) -> list[str]:
        if self.draining:
            return ["draining"]
        failed = []
        for name, check in self.checks.items():
            try:
                ok = await check()
            except Exception:
                ok = False
            if not ok:
                failed.append(name)
        return failed


CleanupContext = Callable[["web.Application"], AsyncIterator[None]]


@dataclass
class Runtime:
    """What a running process holds: settings, ports, token verification and health checks."""

    settings: Settings
    ports: Ports
    verifier: TokenVerifier | None = None
    issuer: EmbeddedIssuer | None = None
    health: Health = field(default_factory=Health)
    services: tuple[str, ...] = ()
    # What the edge serves without a token: its own paths and those the services declare.
    public_paths: frozenset[str] = frozenset()
    public_prefixes: tuple[str, ...] = ()

    def is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(self.public_prefixes)
