"""``lhcie audit verify`` and ``lhcie audit export`` against the audit store itself (an operator on the
host that holds it); with ``--url`` the CLI asks a running audit service instead."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import IO, Any

from services.audit.chain import AuditChain
from services.audit.params import export_range
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointSigner
from shared.config import Settings
from shared.store import open_store


@asynccontextmanager
async def opened(settings: Settings, audit: AuditSettings | None = None) -> AsyncIterator[AuditChain]:
    own = audit or AuditSettings()  # the CLI's one read of LHCIE_AUDIT_*
    store = open_store(settings, "audit")
    chain = AuditChain(
        store,
        signer=lambda: CheckpointSigner.for_settings(own, settings.data_dir),
        checkpoint_every=own.checkpoint_interval,
    )
    await store.start()
    try:
        yield chain
    finally:
        await store.close()


async def verify_store(settings: Settings, since: str | None = None) -> dict[str, Any]:
    """The verification as the ``$verify`` Parameters would name it; ``since`` is a checkpoint's
    record number or ``latest``."""
    async with opened(settings) as chain:
        start: int | None = None
        if since == "latest":
            newest = await chain.checkpoints(limit=1)
            start = newest[0]["seq"] if newest else None
        elif since is not None:
            start = int(since)
        result = await chain.verify(since=start)
    return {
        "intact": result.intact,
        "count": result.count,
        "firstBroken": result.first_broken,
        "problem": result.problem,
        "sinceCheckpoint": result.since,
        "checkpoints": result.checkpoints,
        "unsigned": result.unsigned,
    }


async def export_store(
    settings: Settings, start: str, end: str, out: IO[str], progress: Callable[[int], None] | None = None
) -> int:
    """Write the records recorded in [start, end] to ``out`` as NDJSON; returns how many."""
    lo, hi = export_range(start, end)
    written = 0
    async with opened(settings) as chain:
        async for doc in chain.scan({"date": {"$gte": lo, "$lt": hi}}):
            out.write(
                json.dumps({k: v for k, v in doc.items() if k != "_id"}, separators=(",", ":"), ensure_ascii=False)
                + "\n"
            )
            written += 1
            if progress is not None and written % 10000 == 0:
                progress(written)
    return written


def run_export(args: Any) -> int:
    """``lhcie audit export``: from the store, or from a running service with ``--url``."""
    import asyncio
    import sys
    import urllib.error
    import urllib.parse
    import urllib.request

    from shared.auth import EmbeddedIssuer
    from shared.config import load_settings
    from shared.fhir.errors import FhirError

    settings = load_settings()
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.url:
            issuer = EmbeddedIssuer(settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
            query = urllib.parse.urlencode({"start": args.start, "end": args.end})
            request = urllib.request.Request(
                f"{args.url.rstrip('/')}/fhir/AuditEvent/$export?{query}",
                headers={
                    # The whole chain, so the archive re-verifies link by link: the operator's export.
                    "Authorization": f"Bearer {issuer.mint(org=args.org, role='exchange-operator')}"
                },
            )
            written = 0
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    for line in response:
                        out.write(line.decode())
                        written += 1
            except urllib.error.HTTPError as error:
                print(f"{error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
                return 1
        else:
            try:
                written = asyncio.run(export_store(settings, args.start, args.end, out))
            except FhirError as error:
                print(error.issues[0].diagnostics, file=sys.stderr)
                return 2
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {written} record(s)", file=sys.stderr)
    return 0
