"""The operator's commands: the audit chain's check and export, the bus's queues and dead letters, the
document store's collections and the bucket's settings and integrity."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from lhcie.cli_support import issuer_for, request, settings_or_error
from lhcie.discovery import find
from lhcie.services import SPECS
from shared.config import load_settings


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.url:
        settings = settings_or_error()
        token = issuer_for(settings).mint(org=args.org, role="dcc-admin")
        since = f"?since={args.since_checkpoint}" if getattr(args, "since_checkpoint", None) else ""
        _, body = request("GET", f"{args.url.rstrip('/')}/fhir/AuditEvent/$verify{since}", token)
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body.get("parameter", [])}
    else:
        params = asyncio.run(_verify_store(getattr(args, "since_checkpoint", None)))
    intact = params.get("intact") is True
    detail = f" first broken record: {params['firstBroken']} ({params.get('problem')})" if not intact else ""
    signed = (
        f" {params.get('checkpoints', 0)} signed checkpoint(s) matched; {params.get('unsigned', 0)} newer record(s) not yet signed."
        if intact
        else ""
    )
    print(
        f"audit chain {'intact' if intact else 'BROKEN'}: {params.get('count', 0)} record(s) checked.{detail}{signed}"
    )
    return 0 if intact else 1


async def _verify_store(since: str | None = None) -> dict[str, Any]:
    from services.audit.tools import verify_store

    # The running exchange's data directory when no LHCIE_DATA_DIR says otherwise (a second terminal).
    return await verify_store(load_settings(data_dir=find().data_dir), since)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from services.audit.tools import run_export

    return run_export(args)


def cmd_bus_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from shared.bus import open_bus
    from shared.topology import ALL_QUEUES

    async def declare() -> None:
        bus = open_bus(serve_defaults(), name="lhcie-bus-init")
        await bus.start()
        try:
            await bus.declare(ALL_QUEUES)
        finally:
            await bus.close()

    asyncio.run(declare())
    print(f"declared {len(ALL_QUEUES)} queues and their dead-letter queues")
    return 0


def cmd_bus_dead_letters(args: argparse.Namespace) -> int:
    """Show (or, with --replay, requeue) what waits in a dead-letter queue: ids and types, never payloads."""
    from lhcie.runner import serve_defaults
    from shared.bus import open_bus
    from shared.events import Event

    dead = args.queue if args.queue.endswith(".dead") else f"{args.queue}.dead"

    async def work() -> int:
        bus = open_bus(serve_defaults(), name="lhcie-dead-letters")
        await bus.start()
        try:
            if args.replay:
                moved = await bus.replay(dead, args.limit)
                print(f"requeued {moved} message(s) from {dead} to {dead.removesuffix('.dead')}")
                return 0
            bodies = await bus.peek(dead, args.limit)
        finally:
            await bus.close()
        print(f"{len(bodies)} message(s) shown from {dead} (left in place)")
        for body in bodies:
            try:
                event = Event.from_bytes(body)
                print(
                    f"  {event.time.isoformat(timespec='seconds')}  {event.type:<28} {event.id}  "
                    f"subject={event.subject or '-'}"
                )
            except ValueError:
                print(f"  (not a valid event: {len(body)} bytes)")
        return 0

    return asyncio.run(work())


def cmd_store_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from shared.store import StoreUnavailable
    from shared.store.init import init_stores

    settings = serve_defaults()
    names = args.service or list(SPECS)
    unknown = sorted(set(names) - set(SPECS))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        done = asyncio.run(init_stores(settings, [SPECS[n] for n in names]))
    except StoreUnavailable:
        print("the document store is unavailable; nothing was created", file=sys.stderr)
        return 2
    print(f"{settings.doc_store.value}: collections and indexes ready for {', '.join(done)}")
    return 0


def cmd_storage_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from services.storage.bucket import prepare, report

    text, status = report(asyncio.run(prepare(serve_defaults(), apply=not args.check)))
    print(text)
    return status


def cmd_storage_verify(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from services.storage.integrity import render, verify
    from shared.objects import ObjectStoreUnavailable

    try:
        text, status = render(asyncio.run(verify(serve_defaults())))
    except ObjectStoreUnavailable:
        print("the object store is unavailable; nothing was checked", file=sys.stderr)
        return 2
    print(text)
    return status


def add_operator_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 0 only when intact")
    verify.add_argument("--url", help="ask a running audit service instead of reading its store")
    verify.add_argument("--org", default="RJ1")
    verify.add_argument(
        "--since-checkpoint",
        metavar="SEQ",
        help="start at this checkpoint (its record number, or 'latest') instead of record 1",
    )
    export = audit_sub.add_parser("export", help="write the records of a date range as NDJSON (for archiving)")
    export.add_argument("--start", required=True, help="first day (or dateTime), e.g. 2026-11-01")
    export.add_argument("--end", required=True, help="last day, inclusive, e.g. 2026-11-30")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--url", help="ask a running audit service (as a DCC administrator) instead of its store")
    export.add_argument("--org", default="RJ1")

    bus = sub.add_parser("bus", help="message bus tools")
    bus_sub = bus.add_subparsers(dest="bus_command", required=True)
    bus_sub.add_parser("init", help="declare the exchanges, queues and dead-letter queues")
    dead = bus_sub.add_parser("dead-letters", help="list a queue's dead letters (ids and types), or --replay them")
    dead.add_argument("queue", help="e.g. storage.documents (its .dead queue is read)")
    dead.add_argument("--limit", type=int, default=20)
    dead.add_argument("--replay", action="store_true", help="move them back to their queue to be handled again")

    store = sub.add_parser("store", help="document store tools")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    store_init = store_sub.add_parser("init", help="create every service's collections and indexes (idempotent)")
    store_init.add_argument("service", nargs="*", help=f"only these services (default all: {', '.join(SPECS)})")

    storage = sub.add_parser("storage", help="document bucket tools")
    storage_sub = storage.add_subparsers(dest="storage_command", required=True)
    storage_init = storage_sub.add_parser(
        "init",
        help="create or check the bucket: versioning, encryption, "
        "object lock, staging lifecycle; report what is unsupported",
    )
    storage_init.add_argument("--check", action="store_true", help="only check; change nothing")
    storage_sub.add_parser("verify", help="re-read every filed object and check its SHA-256; exit 0 only if intact")


OPERATOR_HANDLERS: dict[str | tuple[str, str], Callable[[argparse.Namespace], int]] = {
    ("audit", "verify"): cmd_audit_verify,
    ("audit", "export"): cmd_audit_export,
    ("bus", "init"): cmd_bus_init,
    ("bus", "dead-letters"): cmd_bus_dead_letters,
    ("store", "init"): cmd_store_init,
    ("storage", "init"): cmd_storage_init,
    ("storage", "verify"): cmd_storage_verify,
}
