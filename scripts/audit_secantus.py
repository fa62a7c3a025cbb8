"""The bench's audit appends and ``$verify`` on SecantusDB (the MongoDB wire-protocol server the contract tests
start), run from the tree in the current directory:

    .venv/bin/python scripts/audit_secantus.py RECORDS DATA_DIR

Prints one JSON line: durable appends/s with 64 in flight, CPU-ms per append, and the verify's time and CPU.
"""

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, ".")
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.contract.secantus

from lhcie.bench import audit as bench
from shared.store.mongo import MongoStore
from tests.contract.secantus import secantus


async def run(url: str, records: int) -> None:
    store = MongoStore(url, database=f"bench_{uuid.uuid4().hex[:8]}")
    chain = bench._chain(store)  # type: ignore[arg-type]
    await store.start()
    try:
        appended = await bench._append(chain, records, budget=600, concurrency=bench.CONCURRENCY)
        started, cpu = time.perf_counter(), time.process_time()
        verified = await chain.verify()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        out = {
            "tree": os.getcwd(),
            "appends": appended["appended"],
            "appends_per_s": round(appended["appended"] / appended["seconds"], 1),
            "cpu_ms_per_append": appended["cpu_ms_per_append"],
            "verify_s": round(wall, 3),
            "verified_per_s": round(verified.count / wall, 1),
            "verify_cpu_us_per_record": round(cpu / max(verified.count, 1) * 1e6, 1),
            "intact": verified.intact,
            "load": os.getloadavg(),
        }
        print(json.dumps(out))
    finally:
        await store.close()


if __name__ == "__main__":
    with secantus(Path(sys.argv[2])) as server:
        asyncio.run(run(server.url, int(sys.argv[1])))
