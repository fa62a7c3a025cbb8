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
# Polls of the audit tail timed apart after each cell, to give what watching cost per document.
PROBE_POLLS = 50
# The processes that answer the tail's searches (audit's, or the one-process stack): the others' CPU over
# the probe is their own background work, not the tail's.
ANSWER_THE_TAIL = ("audit", "lhcie")


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
    started, polls_before = time.monotonic(), tail.polls
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
    polls = tail.polls - polls_before
    cpu_net = cpu.net_of_idle(cpu_ms, idle_per_s, elapsed, len(done))
    watching = await _cost_of_watching(tail, pids, polls, len(done))
    # A completion is noted when the poll that finds it returns: the tail's resolution is its poll period.
    watching["period_ms"] = round(elapsed * 1000 / max(polls, 1), 1)
    print(
        f"[bench]   {size // 1024} KiB x{senders}: {len(done) / elapsed:.1f} docs/s, CPU-ms/doc "
        + ", ".join(f"{k} {v}" for k, v in cpu_ms.items())
        + f" (the audit tail's {polls} polls: {sum(watching['cpu_ms_per_doc'].values()):.2f})"
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
        "audit_tail": watching,
        "load_average": cpu.load_average(),
        "post_latency": percentiles([p.answered - p.started for p in posted]),
        "end_to_end": percentiles([tail.completed[p.doc_id] - p.started for p in posted if p.doc_id in tail.completed]),
    }


async def _cost_of_watching(tail: AuditTail, pids: dict[str, int], polls: int, documents: int) -> dict[str, Any]:
    """The bench's own share of a cell's CPU: the tail's polls during the cell times what one poll costs
    audit (``PROBE_POLLS`` polls at the same pace with nothing in flight, each its own transaction, so an
    upper bound; every poll is an audited search, a durable append as well as a query)."""
    watched = {name: pid for name, pid in pids.items() if name.split("#", 1)[0] in ANSWER_THE_TAIL}
    before = cpu.sample(watched)
    await tail.probe(PROBE_POLLS)
    per_poll = cpu.by_service(cpu.per_document(before, cpu.sample(watched), PROBE_POLLS))
    per_poll.pop("total", None)
    return {
        "polls": polls,
        "cpu_ms_per_poll": per_poll,
        "cpu_ms_per_doc": {k: round(v * polls / max(documents, 1), 2) for k, v in per_poll.items()},
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
