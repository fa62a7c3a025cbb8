"""Scenario 1, exchange throughput: documents posted -> stored -> alerted -> audited per second.

A document counts only once its whole pipeline has finished (its audit trail is complete, which the
audit service writes last). The clock runs from the first POST to the last completion.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lhcie.bench import cpu
from lhcie.bench.client import Exchange, Posted, encoded_body, percentiles
from lhcie.bench.tracking import AuditTail

IDLE_WINDOW = 1.0


async def post_all(exchange: Exchange, bodies: list[bytes], size: int, senders: int) -> list[Posted]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    posted: list[Posted] = []

    async def sender() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            posted.append(await exchange.post(body, size))

    await asyncio.gather(*(sender() for _ in range(senders)))
    return posted


async def run_cell(
    exchange: Exchange, tail: AuditTail, *, size: int, senders: int, count: int, timeout: float
) -> dict[str, Any]:
    bodies = [encoded_body(size, f"bench {size}B #{i}") for i in range(count)]
    pids = exchange.stack.pids()
    # Apart from the services' total: what the bucket (moto), the broker and the bench itself spend per document.
    servers = exchange.stack.server_pids()
    # What the services spend with no documents moving (the bench's own audit tail and alert stream
    # polling them, timers): over a short window first, so the cell's figure can be given net of it too.
    idle_before, idle_started = cpu.sample(pids), time.monotonic()
    await asyncio.sleep(IDLE_WINDOW)
    cpu_before, servers_before = cpu.sample(pids), cpu.sample(servers)
    idle_per_s = cpu.per_second(idle_before, cpu_before, time.monotonic() - idle_started)
    started = time.monotonic()
    posted = await post_all(exchange, bodies, size, senders)
    posting_done = time.monotonic()
    ids = [p.doc_id for p in posted]
    finished = await tail.wait_for(ids, timeout=timeout)
    done = [tail.completed[i] for i in ids if i in tail.completed]
    last = max(done) if done else time.monotonic()
    elapsed = max(last - started, 1e-9)
    cpu_ms = cpu.per_document(cpu_before, cpu.sample(pids), len(done))
    servers_ms = cpu.per_document(servers_before, cpu.sample(servers), len(done))
    servers_ms.pop("total", None)
    cpu_net = cpu.net_of_idle(cpu_ms, idle_per_s, elapsed, len(done))
    print(
        f"[bench]   {size // 1024} KiB x{senders}: {len(done) / elapsed:.1f} docs/s, CPU-ms/doc "
        + ", ".join(f"{k} {v}" for k, v in cpu_ms.items())
        + "; beside them "
        + ", ".join(f"{k} {v}" for k, v in servers_ms.items())
        + f"; load average {cpu.load_average()[0]}",
        flush=True,
    )
    return {
        "size": size,
        "senders": senders,
        "documents": count,
        "completed": len(done),
        "all_completed": finished,
        "seconds": round(elapsed, 3),
        "docs_per_s": round(len(done) / elapsed, 2),
        "mib_per_s": round(len(done) * size / elapsed / 2**20, 2),
        "post_docs_per_s": round(count / max(posting_done - started, 1e-9), 2),
        "replicas": exchange.stack.replicas,
        "cpu_ms_per_doc": cpu_ms,
        "cpu_ms_per_doc_by_service": cpu.by_service(cpu_ms),
        "server_cpu_ms_per_doc": servers_ms,
        "cpu_ms_per_doc_net_of_idle": cpu_net,
        "idle_cpu_ms_per_s": idle_per_s,
        "load_average": cpu.load_average(),
        "post_latency": percentiles([p.answered - p.started for p in posted]),
        "end_to_end": percentiles([tail.completed[p.doc_id] - p.started for p in posted if p.doc_id in tail.completed]),
    }


async def run(
    exchange: Exchange,
    tail: AuditTail,
    *,
    sizes: list[int],
    senders: list[int],
    count_for: dict[int, int],
    timeout: float,
) -> list[dict[str, Any]]:
    cells = []
    for size in sizes:
        for n in senders:
            cells.append(
                await run_cell(exchange, tail, size=size, senders=n, count=max(count_for[size], n), timeout=timeout)
            )
    return cells
