"""Scenario 5, memory: intake's peak RSS while it takes one large document, and every service's
resident and peak memory at steady state (read from ``/proc/<pid>/status``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from lhcie.bench.client import FHIR_JSON, Exchange, Posted, document_reference, encoded_body
from lhcie.bench.tracking import AuditTail

MIB = 2**20
# The largest document whose base64 JSON body fits intake's default inline limit (10 MiB).
INLINE_FIT = 7 * MIB
CHUNK = MIB


def status_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` value 5), so the peak is this upload's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def streamed_upload_available() -> bool:
    """Intake's streamed (multipart) upload, when its route exists in this tree."""
    routes = Path(__file__).resolve().parents[2] / "services" / "intake" / "routes.py"
    return "multipart" in routes.read_text()


def steady_state(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {
        name: {"rss_mib": round(s.get("VmRSS", 0) / 1024, 1), "peak_mib": round(s.get("VmHWM", 0) / 1024, 1)}
        for name, pid in pids.items()
        for s in [status_kib(pid)]
    }


async def _stream_of(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of a PDF-looking document, produced as they are sent (the client holds one chunk)."""
    head, tail = b"%PDF-1.4\n", b"\n%%EOF\n"
    block = os.urandom(CHUNK)
    yield head
    left = size - len(head) - len(tail)
    while left > 0:
        piece = block[: min(left, CHUNK)]
        left -= len(piece)
        yield piece
    yield tail


async def _post_streamed(exchange: Exchange, size: int) -> Posted:
    """Intake's streamed form: part one the DocumentReference (no ``data``), part two the document."""
    resource = document_reference(b"", "bench large document")
    attachment = resource["content"][0]["attachment"]
    del attachment["data"]
    with aiohttp.MultipartWriter("form-data") as writer:
        writer.append_json(resource, {"Content-Type": FHIR_JSON}).set_content_disposition("form-data", name="resource")
        writer.append(_stream_of(size), {"Content-Type": "application/pdf"}).set_content_disposition(
            "form-data", name="document", filename="large.pdf"
        )
        started = time.monotonic()
        async with exchange.http.post(
            exchange.stack.url("/fhir/DocumentReference"), data=writer, headers=exchange.headers()
        ) as r:
            answer = await r.read()
            if r.status not in (200, 201, 202):
                raise RuntimeError(f"streamed POST answered {r.status}: {answer[:500]!r}")
    posted = Posted(json.loads(answer)["id"], size, started, time.monotonic())
    exchange.posted.append(posted)
    return posted


async def large_document(exchange: Exchange, tail: AuditTail, *, large_size: int, timeout: float) -> dict[str, Any]:
    pid = exchange.stack.pid("intake")
    streamed = streamed_upload_available()
    size = large_size if streamed else min(large_size, INLINE_FIT)
    before = status_kib(pid)
    was_reset = reset_peak(pid)
    started = time.monotonic()
    if streamed:
        posted = await _post_streamed(exchange, size)
    else:
        posted = await exchange.post(encoded_body(size, "bench large document"), size)
    after_post = status_kib(pid)
    completed = await tail.wait_for([posted.doc_id], timeout=timeout)
    return {
        "requested_size": large_size,
        "size": size,
        "path": "streamed multipart" if streamed else "inline base64 JSON (streamed upload not available)",
        "completed": completed,
        "upload_seconds": round(posted.answered - started, 3),
        "seconds": round(time.monotonic() - started, 3),
        "intake_rss_before_mib": round(before.get("VmRSS", 0) / 1024, 1),
        "intake_peak_mib": round(after_post.get("VmHWM", 0) / 1024, 1),
        "intake_growth_mib": round((after_post.get("VmHWM", 0) - before.get("VmRSS", 0)) / 1024, 1),
        "peak_reset_before_upload": was_reset,
    }
