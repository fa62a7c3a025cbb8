"""``$verify`` in this process and in ranges, alternated over one chain, paired under the same load.

    .venv/bin/python scripts/audit_verify_pairs.py /dev/shm/verify-1m.sqlite3 1000000 3

Builds the chain (the service's own records, signed, 64 appends in flight) if the file is not there, then
verifies it ``rounds`` times each way, one after the other, printing one JSON line per verification: wall
seconds, CPU seconds of this process and of the range workers (ended children), and the result."""

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

from lhcie.bench.audit import _append, _chain
from services.audit.chain import AuditChain
from services.audit.verifying import PublicKey
from shared.store.sqlite import SqliteStore


def children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def build(path: Path, records: int) -> None:
    store = SqliteStore(path)
    chain = _chain(store)
    await store.start()
    await _append(chain, records, budget=3600, concurrency=64)
    Path(f"{path}.key").write_text(chain.signer.public_key.hex())
    await store.close()


async def main() -> None:
    path, records, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if not path.exists():
        await build(path, records)
    key = PublicKey(bytes.fromhex(Path(f"{path}.key").read_text()))
    store = SqliteStore(path)
    await store.start()
    try:
        for r in range(rounds):
            for workers in (1, 2):
                chain = AuditChain(store, signer=lambda: key, verify_workers=workers)
                load = os.getloadavg()[0]
                wall, cpu, kids = time.perf_counter(), time.process_time(), children()
                result = await chain.verify()
                print(json.dumps({
                    "round": r, "workers": workers, "wall": round(time.perf_counter() - wall, 3),
                    "cpu": round(time.process_time() - cpu + children() - kids, 3), "ranges": result.ranges,
                    "intact": result.intact, "count": result.count, "load1": load,
                }), flush=True)
    finally:
        await store.close()


asyncio.run(main())
