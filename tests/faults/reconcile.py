"""After a fault run: what the exchange promised (every 2xx) against what its own APIs say it did."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiohttp

from shared.fhir.identifiers import NHS_NUMBER
from shared.topology import ALL_QUEUES
from tests.faults.sender import Sender, Submission
from tests.helpers import TEST_PATIENT

# A document's pipeline trail in the audit log: each exactly once.
TRAIL = ("document.received", "document.stored", "alert.raised")
PAGE = 200


@dataclass
class Tally:
    profile: str
    faults: Counter[str]
    posted: int = 0
    tries: int = 0
    accepted: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    # Those that arrived while intake was stopping and starting again.
    answers_graceful: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # accepted, but not stored with its bytes
    doubled: list[str] = field(default_factory=list)  # one submission under two or more ids
    alerts_missing: list[str] = field(default_factory=list)
    alerts_doubled: list[str] = field(default_factory=list)
    audit_missing: list[str] = field(default_factory=list)  # "<id> <code>"
    audit_doubled: list[str] = field(default_factory=list)
    chain: dict[str, Any] = field(default_factory=dict)
    dead_letters: dict[str, list[str]] = field(default_factory=dict)  # queue -> reasons
    minutes: float = 0.0
    unhandled: list[str] = field(default_factory=list)  # test_fault_run.unhandled_errors
    stops: list[tuple[str, float, int, float]] = field(default_factory=list)  # Injector.stops
    drain_seconds: float = 0.0

    def graceful(self) -> str:
        if not self.stops:
            return "0"
        name, longest, _, _ = max(self.stops, key=lambda stop: stop[1])
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(Counter(code for _, _, code, _ in self.stops).items()))
        ready = max(stop[3] for stop in self.stops)
        return (
            f"{len(self.stops)}; longest stop {longest:.1f} s ({name}, drain limit {self.drain_seconds:.0f} s); "
            f"exit codes {codes}; longest until ready again {ready:.1f} s"
        )

    def rows(self) -> list[tuple[str, str]]:
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults.items()))
        dead = sum(len(v) for v in self.dead_letters.values())
        return [
            ("faults injected", f"{sum(self.faults.values())} ({faults})"),
            ("run time", f"{self.minutes:.1f} min"),
            ("graceful restarts (SIGTERM)", self.graceful()),
            ("submissions posted (tries)", f"{self.posted} ({self.tries})"),
            ("answers", ", ".join(f"{k}: {v}" for k, v in sorted(self.answers.items()))),
            (
                "answers during intake's graceful restarts",
                ", ".join(f"{k}: {v}" for k, v in sorted(self.answers_graceful.items())) or "none",
            ),
            ("documents accepted (2xx)", str(self.accepted)),
            ("lost", str(len(self.lost))),
            ("doubled", str(len(self.doubled))),
            ("alerts missing", str(len(self.alerts_missing))),
            ("alerts doubled", str(len(self.alerts_doubled))),
            ("audit records missing", str(len(self.audit_missing))),
            ("audit records doubled", str(len(self.audit_doubled))),
            ("audit chain", f"intact={self.chain.get('intact')}, {self.chain.get('count')} records"),
            ("unhandled errors in the logs", str(len(self.unhandled))),
            ("dead letters", f"{dead} ({'; '.join(f'{q}: {r}' for q, r in sorted(self.dead_letters.items()))})"),
        ]

    def table(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = [f"| {'fault run: ' + self.profile:<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in self.rows()]
        return "\n".join(lines)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.doubled
            or self.alerts_missing
            or self.alerts_doubled
            or self.audit_missing
            or self.audit_doubled
        )


async def get_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        return await response.json(content_type=None)


async def paged(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        bundle = await get_json(http, f"{url}&_count={PAGE}&_offset={len(found)}", headers)
        entries = [e["resource"] for e in bundle.get("entry", [])]
        found += entries
        if len(entries) < PAGE:
            return found


async def documents(http: aiohttp.ClientSession, intake: str, system: dict[str, str]) -> dict[str, list[str]]:
    """masterIdentifier value -> the ids of the DocumentReferences intake holds for it."""
    found = await paged(http, f"{intake}/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}", system)
    by_master: dict[str, list[str]] = defaultdict(list)
    for resource in found:
        by_master[resource.get("masterIdentifier", {}).get("value", "")].append(resource["id"])
    return by_master


async def stored_bytes(http: aiohttp.ClientSession, storage: str, doc_id: str, system: dict[str, str]) -> str | None:
    async with http.get(f"{storage}/fhir/Binary/{doc_id}", headers={**system, "Accept": "application/pdf"}) as r:
        return hashlib.sha256(await r.read()).hexdigest() if r.status == 200 else None


async def alerts(http: aiohttp.ClientSession, notification: str, coordinator: dict[str, str]) -> Counter[str]:
    found = await paged(http, f"{notification}/fhir/Communication?recipient=CareTeam/rj1-lung", coordinator)
    return Counter(ref["reference"].removeprefix("DocumentReference/") for c in found for ref in c.get("about", []))


async def audit_trails(http: aiohttp.ClientSession, audit: str, operator: dict[str, str]) -> dict[str, Counter[str]]:
    """Document id -> how many records of each pipeline code the whole chain (the operator's export) holds."""
    today = datetime.now(UTC).date()
    url = f"{audit}/fhir/AuditEvent/$export?start={today - timedelta(days=1)}&end={today + timedelta(days=1)}"
    trails: dict[str, Counter[str]] = defaultdict(Counter)
    async with http.get(url, headers=operator) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if not line.strip():
                continue
            record = json.loads(line)
            resource = record.get("resource", record)
            codes = {c.get("code") for c in resource.get("subtype", [])} & set(TRAIL)
            for entity in resource.get("entity", []):
                ref = entity.get("what", {}).get("reference", "")
                if ref.startswith("DocumentReference/"):
                    for code in codes:
                        trails[ref.removeprefix("DocumentReference/")][code] += 1
                    break
    return trails


async def verify(http: aiohttp.ClientSession, audit: str, operator: dict[str, str]) -> dict[str, Any]:
    result = await get_json(http, f"{audit}/fhir/AuditEvent/$verify", operator)
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in result["parameter"]}


async def dead_letters(amqp_url: str) -> dict[str, list[str]]:
    """Every dead-letter queue's messages, each as '<type or body> <reason>', left in place (never acked)."""
    found: dict[str, list[str]] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for spec in ALL_QUEUES:
            queue = await channel.get_queue(f"{spec.name}.dead", ensure=True)
            held: list[aio_pika.abc.AbstractIncomingMessage] = []
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                held.append(message)
            reasons = []
            for message in held:
                deaths = (message.headers or {}).get("x-death") or []
                reason = deaths[0].get("reason") if deaths else None
                reasons.append(f"{message.type or message.routing_key} {reason or 'NO REASON'}")
            if held:
                found[spec.name] = reasons
            await channel.close()  # unacked messages go back to their dead-letter queue
            channel = await connection.channel()
    finally:
        await connection.close()
    return found


async def reconcile(
    tally: Tally, sender: Sender, urls: dict[str, str], headers: dict[str, dict[str, str]], amqp_url: str, settle: Any
) -> Tally:
    tally.posted = len(sender.submissions)
    tally.tries = sum(s.tries for s in sender.submissions)
    tally.answers = sender.statuses
    accepted = sender.accepted
    tally.accepted = len(accepted)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        by_master = await documents(http, urls["intake"], headers["system"])
        for s in accepted:
            ids = set(s.ids) | set(by_master.get(s.master, []))
            if len(ids) > 1:
                tally.doubled.append(f"#{s.number} {sorted(ids)}")
        # A few reads at a time: one after another, a few hundred of them took a good part of the run.
        gate = asyncio.Semaphore(8)

        async def check(s: Submission) -> None:
            async with gate:
                if await stored_bytes(http, urls["storage"], s.ids[0], headers["system"]) != s.sha256:
                    tally.lost.append(f"#{s.number} {s.ids[0]}")

        await asyncio.gather(*(check(s) for s in accepted))
        alerted = await alerts(http, urls["notification"], headers["coordinator"])
        for s in accepted:
            n = alerted[s.ids[0]]
            if n == 0:
                tally.alerts_missing.append(s.ids[0])
            elif n > 1:
                tally.alerts_doubled.append(f"{s.ids[0]} x{n}")
        await settle()  # the reads above are audited: the chain is complete before it is checked
        trails = await audit_trails(http, urls["audit"], headers["operator"])
        for s in accepted:
            for code in TRAIL:
                n = trails.get(s.ids[0], Counter())[code]
                if n == 0:
                    tally.audit_missing.append(f"{s.ids[0]} {code}")
                elif n > 1:
                    tally.audit_doubled.append(f"{s.ids[0]} {code} x{n}")
        tally.chain = await verify(http, urls["audit"], headers["operator"])
    tally.dead_letters = await dead_letters(amqp_url)
    return tally
