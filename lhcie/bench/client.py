"""The bench's HTTP client of the exchange: tokens, documents of a given size, posting, and statistics."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lhcie.bench.harness import Stack
from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

TEST_PATIENT = "9000000009"
MDT = "rj1-lung"
FHIR_JSON = "application/fhir+json"


def pdf_of(size: int) -> bytes:
    """A PDF-looking document of exactly ``size`` bytes (storage checks the declared type's magic)."""
    head, tail = b"%PDF-1.4\n", b"\n%%EOF\n"
    return head + os.urandom(max(size - len(head) - len(tail), 0)) + tail


def document_reference(content: bytes, title: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11526-1", "display": "Pathology study"}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": TEST_PATIENT}},
        "custodian": {"identifier": {"system": ODS_CODE, "value": "RJ1"}},
        "author": [{"identifier": {"system": ODS_CODE, "value": "RJ1"}}],
        "description": title,
        "context": {"related": [{"reference": f"CareTeam/{MDT}"}]},
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": base64.b64encode(content).decode(),
                    "title": title,
                }
            }
        ],
    }


def encoded_body(size: int, title: str) -> bytes:
    return json.dumps(document_reference(pdf_of(size), title)).encode()


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in milliseconds of values given in seconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


@dataclass
class Posted:
    doc_id: str
    size: int
    started: float
    answered: float


@dataclass
class Exchange:
    """One HTTP session to the stack, with the tokens each role needs."""

    stack: Stack
    http: aiohttp.ClientSession
    tokens: dict[str, str] = field(default_factory=dict)
    posted: list[Posted] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: Stack) -> Exchange:
        issuer = stack.issuer()
        tokens = {
            "system": issuer.mint(org="RJ1", role="system", ttl=24 * 3600),
            "coordinator": issuer.mint(org="RJ1", role="mdt-coordinator", mdt=MDT, ttl=24 * 3600),
            "admin": issuer.mint(org="RJ1", role="dcc-admin", ttl=24 * 3600),
            # Reads every audit record (a security team's feed of the whole exchange): the tail and the
            # reconciliation watch the pipeline as the exchange's operator would.
            "operator": issuer.mint(org="LHCIE", role="exchange-operator", ttl=24 * 3600),
        }
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=600)
        )
        return cls(stack, http, tokens)

    async def close(self) -> None:
        await self.http.close()

    def headers(self, who: str = "system") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", "Accept": FHIR_JSON}

    async def post(self, body: bytes, size: int) -> Posted:
        started = time.monotonic()
        while True:
            async with self.http.post(
                self.stack.url("/fhir/DocumentReference"),
                data=body,
                headers={**self.headers(), "Content-Type": FHIR_JSON},
            ) as r:
                answer = await r.read()
                # Intake caps one organisation's uploads in progress (8 by default): more senders than that
                # wait their turn, as a hospital system does, and the wait counts in their latency.
                if r.status == 429:
                    await asyncio.sleep(min(float(r.headers.get("Retry-After", "0.05") or 0.05), 1.0))
                    continue
                if r.status != 202:
                    raise RuntimeError(f"POST DocumentReference answered {r.status}: {answer[:500]!r}")
                break
        posted = Posted(json.loads(answer)["id"], size, started, time.monotonic())
        self.posted.append(posted)
        return posted

    async def get_json(self, path: str, who: str = "system") -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.stack.url(path), headers=self.headers(who)) as r:
            body = await r.read()
            return r.status, (json.loads(body) if body else {})
