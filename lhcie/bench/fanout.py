"""Scenario 7, fan-out: many coordinator consoles on the SSE stream and many rest-hook subscribers at
once; how long an alert takes to reach each, and what the notification service holds in memory.

Either half reports "not available" when this tree's notification service does not serve it yet.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import aiohttp
from aiohttp import web

from lhcie.bench import cpu
from lhcie.bench.client import MDT, Exchange, encoded_body, percentiles
from lhcie.bench.memory import status_kib
from lhcie.bench.tracking import DOCUMENT_REF, stream_url

ALERT_REF = re.compile(r"Communication/([A-Za-z0-9\-.]{1,64})")
# The exchange's subscription topic and the Subscriptions Backport IG (the API's published contract).
TOPIC = "https://lhcie.london/fhir/SubscriptionTopic/alert-raised"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


def _notification_mib(exchange: Exchange) -> float:
    return round(status_kib(exchange.stack.pid("notification")).get("VmRSS", 0) / 1024, 1)


async def sse(exchange: Exchange, *, connections: int, documents: int, size: int, timeout: float) -> dict[str, Any]:
    if await stream_url(exchange) is None:
        return {"available": False, "reason": "POST /alerts/stream-token and GET /alerts/stream are not served"}
    seen: list[dict[str, float]] = [{} for _ in range(connections)]
    opened = 0
    all_open = asyncio.Event()
    rss_idle = _notification_mib(exchange)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:

        async def listen(i: int) -> None:
            nonlocal opened
            async with gate:
                url = await stream_url(exchange)
            if url is None:
                raise RuntimeError("no stream token")
            async with http.get(url, headers={"Accept": "text/event-stream"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"stream answered {r.status}")
                opened += 1
                if opened == connections:
                    all_open.set()
                async for raw in r.content:
                    now = time.monotonic()
                    for doc_id in DOCUMENT_REF.findall(raw.decode(errors="replace")):
                        seen[i].setdefault(doc_id, now)

        gate = asyncio.Semaphore(16)  # token requests in small batches; the streams themselves all stay open
        listeners = [asyncio.create_task(listen(i)) for i in range(connections)]
        try:
            try:
                await asyncio.wait_for(all_open.wait(), timeout)
            except TimeoutError:
                pass  # measured over the streams that did open; the result says how many
            rss_open = _notification_mib(exchange)
            latencies: list[float] = []
            delivered = 0
            for n in range(documents):
                posted = await exchange.post(encoded_body(size, f"bench fan-out #{n}"), size)
                deadline = time.monotonic() + timeout
                while sum(posted.doc_id in s for s in seen) < opened and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                for s in seen:
                    if posted.doc_id in s:
                        delivered += 1
                        latencies.append(max(s[posted.doc_id] - posted.answered, 0.0))
            rss_after = _notification_mib(exchange)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    return {
        "available": True,
        "connections": connections,
        "connections_opened": opened,
        "documents": documents,
        "deliveries": delivered,
        "expected_deliveries": connections * documents,
        "latency": percentiles(latencies),
        "notification_rss_idle_mib": rss_idle,
        "notification_rss_open_mib": rss_open,
        "notification_rss_after_mib": rss_after,
    }


def _subscription(endpoint: str) -> dict[str, Any]:
    """A topic-based rest-hook Subscription (Subscriptions Backport IG) to the MDT's raised alerts."""
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "LHCIE bench fan-out",
        "criteria": TOPIC,
        "_criteria": {
            "extension": [
                {
                    "url": f"{BACKPORT}/backport-filter-criteria",
                    "valueString": f"Communication?recipient=CareTeam/{MDT}",
                }
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
        },
    }


async def _alert_of(exchange: Exchange, doc_id: str, timeout: float) -> str | None:
    """The id of the alert raised for a document (an id-only notification names the alert, not the
    document)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, bundle = await exchange.get_json(
            f"/fhir/Communication?recipient=CareTeam/{MDT}&_count=50", "coordinator"
        )
        for entry in bundle.get("entry", []) if status == 200 else []:
            resource = entry["resource"]
            if any(a.get("reference") == f"DocumentReference/{doc_id}" for a in resource.get("about", [])):
                return str(resource["id"])
        await asyncio.sleep(0.05)
    return None


async def webhooks(
    exchange: Exchange, *, subscribers: int, documents: int, size: int, timeout: float, hosts: int = 1
) -> dict[str, Any]:
    """``subscribers`` rest-hook receivers spread over ``hosts`` listening ports. The notification service
    limits its requests in flight per host and port (``webhook_concurrency_per_host``): receivers all
    behind one port measure that limit, receivers on their own ports (as a hundred subscribing trusts
    are) measure the fan-out."""
    seen: list[dict[str, float]] = [{} for _ in range(subscribers)]

    async def hook(request: web.Request) -> web.Response:
        now = time.monotonic()
        i = int(request.match_info["i"])
        for alert_id in ALERT_REF.findall((await request.read()).decode(errors="replace")):
            seen[i].setdefault(alert_id, now)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook/{i}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(max(1, min(hosts, subscribers))):
        # Bound here and handed over, not picked free and bound later: a hundred ports picked that way
        # collide, with each other or with a neighbour.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        await web.SockSite(runner, sock).start()
    try:
        for i in range(subscribers):
            async with exchange.http.post(
                exchange.stack.url("/fhir/Subscription"),
                data=json.dumps(_subscription(f"http://127.0.0.1:{ports[i % len(ports)]}/hook/{i}")),
                headers={**exchange.headers("system"), "Content-Type": "application/fhir+json"},
            ) as r:
                if r.status >= 300:
                    reason = f"POST /fhir/Subscription answered {r.status}"
                    return {"available": False, "reason": reason, "created": i}  # the ones before this
        rss_before = _notification_mib(exchange)
        latencies: list[float] = []
        delivered = 0
        # What a delivery costs, whatever the load: every process's CPU over the alerts, per delivery made.
        cpu_before = cpu.sample(exchange.stack.pids())
        for n in range(documents):
            posted = await exchange.post(encoded_body(size, f"bench webhook #{n}"), size)
            alert_id = await _alert_of(exchange, posted.doc_id, timeout)
            deadline = time.monotonic() + timeout
            while alert_id and sum(alert_id in s for s in seen) < subscribers and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for s in seen:
                if alert_id in s:
                    delivered += 1
                    latencies.append(max(s[alert_id] - posted.answered, 0.0))
        cpu_per_delivery = cpu.per_document(cpu_before, cpu.sample(exchange.stack.pids()), delivered)
        return {
            "available": True,
            "subscribers": subscribers,
            "hosts": len(ports),
            "documents": documents,
            "deliveries": delivered,
            "expected_deliveries": subscribers * documents,
            "latency": percentiles(latencies),
            "notification_rss_before_mib": rss_before,
            "notification_rss_after_mib": _notification_mib(exchange),
            # Per process (``notification#2`` for a replica), and by service; the total includes the
            # posting of the documents themselves (intake, storage, audit), a few per cent of it.
            "cpu_ms_per_delivery": cpu_per_delivery,
            "cpu_ms_per_delivery_by_service": cpu.by_service(cpu_per_delivery),
        }
    finally:
        await runner.cleanup()
