"""Small helpers shared by the test suites (no fixtures here; see conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from shared.bus import QueueSpec
from shared.bus.sqlite import FILE_NAME as BUS_FILE
from shared.bus.sqlite import backlog_of_file
from shared.events import AccessDenied, Actor, Event, RoutingKey
from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

T = TypeVar("T")
TEST_PATIENT = "9000000009"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy (a wait for an asynchronous effect, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response of declared length from a raw connection: (status, headers lower-cased, body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split()[1]), headers, body


def outbox_rows(data_dir: Path) -> int:
    """Unsent outbox rows of every service whose store is a SQLite file in ``data_dir``."""
    total = 0
    for db in data_dir.glob("*.sqlite3"):
        if db.name == BUS_FILE:
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            total += conn.execute("SELECT COUNT(*) FROM c_outbox").fetchone()[0]
        except sqlite3.OperationalError:
            pass  # a store without an outbox
        finally:
            conn.close()
    return total


async def settled(data_dir: Path, *, timeout: float = 30.0) -> None:
    """Barrier for "nothing more will arrive" on the embedded bus of ``data_dir`` (in this process or
    another): the test's own requests have returned, and then, in this order,
    1. the bus's publish counter P0 and its queues are read in one transaction: no message ready or
       unacknowledged outside the dead-letter queues, so no handler is running;
    2. every service's outbox is empty;
    3. the publish counter is read again and equals P0.
    Sound because each hand-over overlaps: a handler commits its effects and outbox rows before it acks
    (the message is deleted only on ack), and the relay deletes a row only after its publish committed.
    Work still pending at step 1 is a queued message (seen) or an outbox row, which is seen in step 2
    unless it was published after step 1, which moves the counter read in step 3.
    """
    bus_file = data_dir / BUS_FILE

    async def quiet() -> bool:
        before = backlog_of_file(bus_file)
        if before.live() or outbox_rows(data_dir):
            return False
        return backlog_of_file(bus_file).published == before.published

    await eventually(quiet, timeout=timeout)


# Bound to every routing key and never consumed: its message count is the vhost's publish counter.
PUBLISH_TAP = QueueSpec("test.publish-tap", ("#",))


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def queue_rows(vhost: str, *columns: str) -> list[dict[str, Any]]:
    """``rabbitmqctl list_queues`` of ``vhost``: one dict per queue, its ``name`` and ``columns``."""
    return list(json.loads(rabbitmqctl("list_queues", "-p", vhost, "name", *columns, "--formatter", "json")))


def rabbitmq_queues(amqp_url: str) -> dict[str, tuple[int, int]]:
    """(ready, unacknowledged) of every queue of the vhost in ``amqp_url``."""
    rows = queue_rows(amqp_url.rsplit("/", 1)[1], "messages_ready", "messages_unacknowledged")
    return {q["name"]: (int(q["messages_ready"]), int(q["messages_unacknowledged"])) for q in rows}


async def rabbitmq_settled(
    amqp_url: str,
    outbox_rows: Callable[[], Awaitable[int]],
    *,
    only: Collection[str] | None = None,
    timeout: float = 60.0,
) -> None:
    """The same barrier on RabbitMQ, for a vhost where ``PUBLISH_TAP`` was declared before any traffic:
    the tap's count P0; then every other non-dead queue empty (nothing ready or unacknowledged); then
    every outbox empty (``outbox_rows``); then the tap's count again, equal to P0 (the argument of
    ``settled``, with the tap as the publish counter). ``only``: the queues that have consumers in the
    test (others, which nobody reads, may hold messages)."""

    def tap() -> int:
        return sum(rabbitmq_queues(amqp_url)[PUBLISH_TAP.name])

    async def quiet() -> bool:
        before = await asyncio.to_thread(tap)
        queues = await asyncio.to_thread(rabbitmq_queues, amqp_url)
        if any(
            r or u
            for name, (r, u) in queues.items()
            if name != PUBLISH_TAP.name and not name.endswith(".dead") and (only is None or name in only)
        ):
            return False
        if await outbox_rows():
            return False
        return await asyncio.to_thread(tap) == before

    await eventually(quiet, timeout=timeout, interval=0.2)


def document_reference(
    *,
    content: bytes = PDF,
    content_type: str = "application/pdf",
    patient: str = TEST_PATIENT,
    custodian: str = "RJ1",
    type_code: str = "11526-1",
    related: tuple[str, ...] = ("CareTeam/rj1-lung",),
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code, "display": "Pathology study"}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "custodian": {"identifier": {"system": ODS_CODE, "value": custodian}},
        "content": [{"attachment": {"contentType": content_type, "data": base64.b64encode(content).decode()}}],
    }
    if related:
        resource["context"] = {"related": [{"reference": r} for r in related]}
    return resource


# What `lhcie serve` (and `python -m services.<name>`) needs beyond the bus and store URLs: the settings that
# have no safe default, and the embedded issuer enabled on purpose (tests mint tokens with it).
SERVE_ENV = {
    "LHCIE_EMBEDDED_ISSUER": "true",
    "LHCIE_JWT_ISSUER": "lhcie-embedded",
    "LHCIE_JWT_AUDIENCE": "lhcie",
    "LHCIE_S3_BUCKET": "lhcie-documents",
}


def denial(**fields: Any) -> Event:
    """An event no consumer's effect depends on (an access denial): for tests of the bus, the outbox and the
    consumer machinery. ``fields`` go to ``Event.new`` (``subject``, for one)."""
    return Event.new(
        RoutingKey.ACCESS_DENIED,
        AccessDenied(
            actor=Actor(org="RAL", role="clinician", subject="s"),
            resource="Binary/1",
            action="read",
            reason_code="no-isa",
            reason="r",
        ),
        source="urn:test",
        **fields,
    )
