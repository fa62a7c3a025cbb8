"""Scenario 2, alert latency: from the POST's 202 to the alert reaching the MDT coordinator, at an idle
stack (one document at a time) and under the load of scenario 1."""

from __future__ import annotations

import asyncio
from typing import Any

from lhcie.bench.client import Exchange, Posted, encoded_body, percentiles
from lhcie.bench.throughput import post_all
from lhcie.bench.tracking import AlertWatcher, AuditTail

IDLE_PAUSE = 0.05


async def idle(exchange: Exchange, alerts: AlertWatcher, *, size: int, count: int, timeout: float) -> dict[str, Any]:
    latencies: list[float] = []
    missed = 0
    for i in range(count):
        posted = await exchange.post(encoded_body(size, f"bench idle #{i}"), size)
        seen = await alerts.wait_for(posted.doc_id, timeout=timeout)
        if seen is None:
            missed += 1
        else:
            latencies.append(max(seen - posted.answered, 0.0))
        await asyncio.sleep(IDLE_PAUSE)
    return {"load": "idle", "size": size, "documents": count, "missed": missed, **percentiles(latencies)}


async def under_load(
    exchange: Exchange, alerts: AlertWatcher, tail: AuditTail, *, size: int, senders: int, count: int, timeout: float
) -> dict[str, Any]:
    bodies = [encoded_body(size, f"bench loaded #{i}") for i in range(count)]
    posted: list[Posted] = await post_all(exchange, bodies, size, senders)
    await tail.wait_for([p.doc_id for p in posted], timeout=timeout)
    latencies, missed = [], 0
    for p in posted:
        seen = await alerts.wait_for(p.doc_id, timeout=1.0)
        if seen is None:
            missed += 1
        else:
            latencies.append(max(seen - p.answered, 0.0))
    return {"load": f"{senders} senders", "size": size, "documents": count, "missed": missed, **percentiles(latencies)}
