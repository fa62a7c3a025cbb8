"""Watching documents finish: the audit log's tail (completion), the coordinator's alerts (latency), and
the final reconciliation of every document the run posted.

A document is complete when its audit trail holds ``document.received``, ``document.stored`` and
``alert.raised``: audit consumes those events last, so their presence means the document is stored and
its alert raised. The reconciliation at the end checks all three effects independently of this tail.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp

from lhcie.bench.client import MDT, Exchange

DOCUMENT_REF = re.compile(r"DocumentReference/([A-Za-z0-9\-.]{1,64})")
DONE = frozenset({"document.received", "document.stored", "alert.raised"})
# The reconciliation reads only these records (FHIR's comma is OR).
SUBTYPES = ",".join(sorted(DONE))
PAGE = 200


def _documents_of(resource: dict[str, Any]) -> list[str]:
    refs = [e.get("what", {}).get("reference", "") for e in resource.get("entity", [])]
    return [r.removeprefix("DocumentReference/") for r in refs if r.startswith("DocumentReference/")]


def _code_of(resource: dict[str, Any]) -> str:
    return str(resource.get("subtype", [{}, {}])[-1].get("code", ""))


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


class AuditTail:
    """Reads the audit log in chain order and notes when each document's trail becomes complete, as an
    audit API client would: ``GET /fhir/AuditEvent?sequence=gt<the last id it read>``, so a poll reads only
    what is new: the records since the last poll, its previous search's own record among them (every search
    is audited). Not filtered by ``subtype``: the cursor could then only move to the last record that
    matched, and each poll would test again every record of the searches since (SQLite re-parses a
    record's JSON for each value tested), a cost that grows while nothing is in flight.

    It polls every ``interval`` (20 ms) while a document the bench posted (or waits for) has not completed,
    and every ``idle_interval`` otherwise: nothing in flight, nothing to time, and every poll costs audit a
    durable append."""

    def __init__(self, exchange: Exchange, *, interval: float = 0.02, idle_interval: float = 1.0) -> None:
        self._exchange = exchange
        self._interval = interval
        self._idle_interval = idle_interval
        self._after = 0  # the last record read (its id is its place in the chain)
        self.codes: dict[str, set[str]] = {}
        self.completed: dict[str, float] = {}
        self.polls = 0  # searches sent, for the cost of watching
        self.looks = 0  # local looks at what is in flight (each may or may not poll)
        self._pending: set[str] = set()
        self._seen_posts = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._catch_up()  # what was already there is not part of this run
        self.codes.clear()
        self.completed.clear()
        self._seen_posts = len(self._exchange.posted)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await _cancel(self._task)

    def outstanding(self) -> int:
        """Documents posted (or waited for) whose trail is not complete yet."""
        posted = self._exchange.posted
        if self._seen_posts < len(posted):
            self._pending.update(p.doc_id for p in posted[self._seen_posts :] if p.doc_id not in self.completed)
            self._seen_posts = len(posted)
        return len(self._pending)

    async def _catch_up(self) -> int:
        read = 0
        while True:
            status, bundle = await self._exchange.get_json(
                f"/fhir/AuditEvent?sequence=gt{self._after}&_count={PAGE}", "operator"
            )
            self.polls += 1
            if status != 200:
                raise RuntimeError(f"audit search answered {status}: {bundle}")
            entries = bundle.get("entry", [])
            now = time.monotonic()
            for entry in entries:
                resource = entry["resource"]
                self._after = max(self._after, int(resource["id"]))
                if (code := _code_of(resource)) not in DONE:
                    continue
                for doc_id in _documents_of(resource):
                    codes = self.codes.setdefault(doc_id, set())
                    codes.add(code)
                    if doc_id not in self.completed and codes >= DONE:
                        self.completed[doc_id] = now
                        self._pending.discard(doc_id)
            read += len(entries)
            if len(entries) < PAGE:
                return read

    async def _run(self) -> None:
        last_poll = time.monotonic()  # start() has just caught up
        while True:
            if self.outstanding() or time.monotonic() - last_poll >= self._idle_interval:
                last_poll = time.monotonic()
                try:
                    if await self._catch_up():
                        self._changed.set()
                except aiohttp.ClientError:
                    pass
            # Between polls only a local look at what the bench has posted: it costs the services nothing.
            self.looks += 1
            await asyncio.sleep(self._interval)

    async def probe(self, polls: int) -> None:
        """``polls`` polls at the tail's pace with nothing in flight: what watching costs, measured apart."""
        for _ in range(polls):
            await self._catch_up()
            await asyncio.sleep(self._interval)

    async def wait_for(self, doc_ids: list[str], *, timeout: float) -> bool:
        self._pending.update(d for d in doc_ids if d not in self.completed)
        deadline = time.monotonic() + timeout
        while not all(d in self.completed for d in doc_ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
        return True


class AlertWatcher:
    """When each alert reached the coordinator: from the SSE stream ``/alerts/stream`` when the
    notification service serves it, else by polling ``GET /fhir/Communication`` (newest first)."""

    def __init__(self, exchange: Exchange, *, interval: float = 0.01) -> None:
        self._exchange = exchange
        self._interval = interval
        self.seen: dict[str, float] = {}
        self.method = "polling GET /fhir/Communication"
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()

    async def start(self) -> None:
        if await self._sse_available():
            self.method = "SSE /alerts/stream"
            self._task = asyncio.create_task(self._stream())
            await asyncio.wait_for(self._ready.wait(), 10)
        else:
            await self._poll_once(initial=True)
            self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        await _cancel(self._task)

    def _note(self, reference: str) -> None:
        doc_id = reference.removeprefix("DocumentReference/")
        if doc_id not in self.seen:
            self.seen[doc_id] = time.monotonic()
            self._changed.set()

    async def _sse_available(self) -> bool:
        return await stream_url(self._exchange) is not None

    async def _stream(self) -> None:
        while True:
            try:
                # A stream token is short-lived and single-purpose: fetch a fresh one for every connection.
                url = await stream_url(self._exchange)
                if url is None:
                    raise aiohttp.ClientError("no stream token")
                async with self._exchange.http.get(
                    url, headers={"Accept": "text/event-stream"}, timeout=aiohttp.ClientTimeout(total=None)
                ) as r:
                    if r.status != 200:
                        raise aiohttp.ClientError(f"stream answered {r.status}")
                    self._ready.set()
                    data: list[str] = []
                    async for raw in r.content:
                        line = raw.decode().rstrip("\r\n")
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif not line and data:
                            self._on_event("\n".join(data))
                            data = []
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.1)

    def _on_event(self, text: str) -> None:
        # Whatever shape the event has (a Communication, or an envelope naming one), the document it is
        # about appears as a DocumentReference reference.
        for doc_id in DOCUMENT_REF.findall(text):
            self._note(doc_id)

    async def _poll_once(self, *, initial: bool = False) -> None:
        status, bundle = await self._exchange.get_json(
            f"/fhir/Communication?recipient=CareTeam/{MDT}&_count={PAGE}", "coordinator"
        )
        if status != 200:
            raise RuntimeError(f"alert search answered {status}: {bundle}")
        for entry in bundle.get("entry", []):
            for ref in _abouts(entry["resource"]):
                if initial:
                    self.seen.setdefault(ref.removeprefix("DocumentReference/"), 0.0)
                else:
                    self._note(ref)

    async def _poll(self) -> None:
        while True:
            try:
                await self._poll_once()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(self._interval)

    async def wait_for(self, doc_id: str, *, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while doc_id not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
        return self.seen[doc_id]


async def stream_url(exchange: Exchange) -> str | None:
    """The coordinator's SSE URL: ``POST /alerts/stream-token`` with the bearer token, then
    ``GET /alerts/stream?token=...`` (a browser's EventSource cannot send headers). ``None`` when this
    build does not serve the stream."""
    try:
        async with exchange.http.post(
            exchange.stack.url(f"/alerts/stream-token?team=CareTeam/{MDT}"),
            headers=exchange.headers("coordinator"),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as r:
            if r.status != 200:
                return None
            grant = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    token = grant.get("token") if isinstance(grant, dict) else None
    if not token:
        return None
    return exchange.stack.url(f"/alerts/stream?{urlencode({'token': token})}")


def _abouts(message: Any) -> list[str]:
    """DocumentReference references in a Communication (or an SSE message wrapping one)."""
    if not isinstance(message, dict):
        return []
    resource = message.get("resource", message) if message.get("resourceType") != "Communication" else message
    if not isinstance(resource, dict):
        return []
    found = [a.get("reference", "") for a in resource.get("about", []) if isinstance(a, dict)]
    if isinstance(message.get("document"), str):
        found.append(message["document"])
    return [r for r in found if r.startswith("DocumentReference/")]


async def reconcile(exchange: Exchange, *, concurrency: int = 8) -> dict[str, Any]:
    """Check every document the run posted, independently of the tail: stored (GET 200), alerted (in
    the MDT's alert list) and audited (its received, stored and alert.raised records)."""
    doc_ids = [p.doc_id for p in exchange.posted]
    alerted: set[str] = set()
    offset = 0
    while True:
        status, bundle = await exchange.get_json(
            f"/fhir/Communication?recipient=CareTeam/{MDT}&_count={PAGE}&_offset={offset}", "coordinator"
        )
        entries = bundle.get("entry", []) if status == 200 else []
        for entry in entries:
            alerted.update(r.removeprefix("DocumentReference/") for r in _abouts(entry["resource"]))
        offset += len(entries)
        if len(entries) < PAGE:
            break
    stored: set[str] = set()
    gate = asyncio.Semaphore(concurrency)

    async def check(doc_id: str) -> None:
        async with gate:
            status, _ = await exchange.get_json(f"/fhir/DocumentReference/{doc_id}")
            if status == 200:
                stored.add(doc_id)

    await asyncio.gather(*(check(d) for d in doc_ids))
    audited = await audited_documents(exchange, doc_ids)
    missing = sorted({d for d in doc_ids if not (d in stored and d in alerted and d in audited)})
    return {
        "documents": len(doc_ids),
        "stored": len(stored),
        "alerted": len(alerted & set(doc_ids)),
        "audited": len(audited),
        "complete": len(doc_ids) - len(missing),
        "missing": missing[:50],
    }


async def audited_documents(exchange: Exchange, doc_ids: list[str]) -> set[str]:
    """The documents whose received, stored and alert.raised records are all in the audit log: the log's
    records of those three kinds read once in chain order (``sequence=gt<id>``, 200 a page, through the
    sequence index). Not ``entity=`` per document, nor fifty ORed: on SQLite 3.40 an ``entity`` search
    visits every record (an array field's equality goes through an index of its JSON type, which every
    record matches) and tests each value against each, so either costs O(records) per document."""
    wanted = set(doc_ids)
    codes: dict[str, set[str]] = {}
    after = 0
    while True:
        status, bundle = await exchange.get_json(
            f"/fhir/AuditEvent?subtype={SUBTYPES}&sequence=gt{after}&_count={PAGE}", "operator"
        )
        # A refused search leaves the rest unaudited: those documents are listed as missing.
        entries = bundle.get("entry", []) if status == 200 else []
        for entry in entries:
            code = _code_of(entry["resource"])
            for doc_id in _documents_of(entry["resource"]):
                if doc_id in wanted:
                    codes.setdefault(doc_id, set()).add(code)
            after = max(after, int(entry["resource"]["id"]))
        if len(entries) < PAGE:
            break
    return {d for d in doc_ids if codes.get(d, set()) >= DONE}
