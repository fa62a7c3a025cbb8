"""A service process for the outbox crash tests, run as ``python -m tests.integration.outbox_worker``.

``commit``: in one transaction record a state change and its event in the outbox, then die (os._exit)
before the relay could publish. ``commit-publish``: the same, then publish the event as the relay does
and die before the outbox row is removed, so a restart publishes it a second time. ``relay``: start
normally (which starts the relay), wait until the outbox is empty, stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from shared.bus.amqp import AmqpBus
from shared.config import BusKind, DocStoreKind, Settings
from shared.context import ServiceContext
from shared.events import AccessDenied, Actor, Event, RoutingKey
from shared.objects.fs import FileObjectStore
from shared.service import Ports, Runtime

CRASHED = 17  # the exit status that says "died where the test wanted"


def context(args: argparse.Namespace) -> ServiceContext:
    settings = Settings(
        data_dir=Path(args.data_dir),
        bus=BusKind.AMQP,
        amqp_url=SecretStr(args.amqp_url),
        doc_store=DocStoreKind.MONGODB if args.mongodb_url else DocStoreKind.SQLITE,
        mongodb_url=SecretStr(args.mongodb_url) if args.mongodb_url else None,
    )
    bus = AmqpBus(args.amqp_url, connection_name="outbox-crash-worker")
    return ServiceContext("worker", Runtime(settings, Ports(bus, FileObjectStore(Path(args.data_dir) / "objects"))))


def denied(event_id: str) -> Event:
    payload = AccessDenied(
        actor=Actor(org="RAL", role="clinician", subject="dr@RAL"),
        resource="Binary/crash",
        action="read",
        reason_code="no-isa",
        reason="no accepted ISA",
    )
    return Event.new(
        RoutingKey.ACCESS_DENIED, payload, source="urn:lhcie:service:worker", subject="Binary/crash", event_id=event_id
    )


async def main(args: argparse.Namespace) -> int:
    ctx = context(args)
    bus = ctx.runtime.ports.bus
    decisions = ctx.store.collection("decisions")
    await bus.start()
    if args.mode == "relay":
        await ctx.start()
        await ctx.outbox.flush(timeout=20)
        pending = await ctx.outbox.pending()
        await ctx.stop()
        await bus.close()
        return 0 if pending == 0 else 1

    # The store only: a relay started here could publish before the crash we want to stage.
    await ctx.store.start()
    event = denied(args.event_id)
    async with ctx.store.transaction() as session:
        await decisions.insert({"_id": args.event_id, "decision": "deny"}, session=session)
        await ctx.publish(event, session=session)
    if args.mode == "commit-publish":
        await bus.publish(event)
    os._exit(CRASHED)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["commit", "commit-publish", "relay"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--mongodb-url")
    parser.add_argument("--event-id", default="")
    sys.exit(asyncio.run(main(parser.parse_args())))
