"""Killing the audit process mid-stream loses nothing and duplicates nothing (real RabbitMQ).

The audit service runs as its own process (``python -m services.audit``) on a private vhost. Half the
events are published, the process is SIGKILLed while it is recording them, the other half is published
while it is down, and a fresh process finishes the job: every event is recorded exactly once and the
chain verifies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.audit.chain import AuditChain
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointSigner
from shared.bus.amqp import AmqpBus
from shared.config import Settings
from shared.events import Actor, DocumentFacts, DocumentRetrieved, Event, RoutingKey
from shared.store.sqlite import SqliteStore
from shared.topology import ALL_QUEUES
from tests.helpers import PUBLISH_TAP, SERVE_ENV, TEST_PATIENT, eventually, free_port, outbox_rows, rabbitmq_settled

pytestmark = pytest.mark.rabbitmq

EVENTS = 400
CHECKPOINT_EVERY = 25
WINDOW = 10  # events published ahead of those recorded, while the first process runs
ROOT = Path(__file__).resolve().parents[2]


def events() -> list[Event]:
    actor = Actor(org="RRV", role="clinician", subject="dr.okafor@RRV", address="10.1.2.3")
    made = []
    for i in range(EVENTS):
        facts = DocumentFacts(
            document_id=f"doc-{i}",
            patient_nhs_number=TEST_PATIENT,
            custodian="RJ1",
            content_type="application/pdf",
            size=10,
            sha256="0" * 64,
        )
        made.append(
            Event.new(
                RoutingKey.DOCUMENT_RETRIEVED,
                DocumentRetrieved(document=facts, actor=actor),
                source="urn:lhcie:service:storage",
                correlation_id=f"req-{i}",
            )
        )
    return made


class AuditProcess:
    def __init__(self, amqp_url: str, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            **SERVE_ENV,
            "LHCIE_BUS": "amqp",
            "LHCIE_AMQP_URL": amqp_url,
            "LHCIE_OBJECT_STORE": "fs",
            "LHCIE_DATA_DIR": str(data_dir),
            "LHCIE_AUDIT_CHECKPOINT_INTERVAL": str(CHECKPOINT_EVERY),
        }
        self.log = data_dir / "audit-process.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.env["LHCIE_HTTP_PORT"] = str(free_port())
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.audit"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def audit_process(amqp_url: str, tmp_path: Path) -> Iterator[AuditProcess]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    process = AuditProcess(amqp_url, data_dir)
    yield process
    process.stop()


def recorded(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM c_audit_records").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


async def test_killing_the_audit_process_mid_stream_loses_nothing(amqp_url: str, audit_process: AuditProcess) -> None:
    data_dir = Path(audit_process.env["LHCIE_DATA_DIR"])
    db = Settings(data_dir=data_dir).service_db_path("audit")
    stream = events()
    first, second = stream[: EVENTS // 2], stream[EVENTS // 2 :]

    bus = AmqpBus(amqp_url, connection_name="audit-crash-test")
    await bus.start()
    try:
        await bus.declare([*ALL_QUEUES, PUBLISH_TAP])
        audit_process.start()
        # The first half is published a few at a time ahead of what audit has recorded, so the kill
        # (once 5 are recorded) always lands mid-stream, however fast or slow the machine is.
        killed = asyncio.Event()

        async def publish_first_half() -> None:
            for n, event in enumerate(first):
                if not killed.is_set():
                    await eventually(
                        lambda n=n: asyncio.sleep(0, killed.is_set() or recorded(db) >= n - WINDOW),
                        timeout=60,
                        interval=0.005,
                    )
                await bus.publish(event)

        publisher = asyncio.create_task(publish_first_half())
        await eventually(lambda: asyncio.sleep(0, recorded(db) >= 5), timeout=60, interval=0.005)
        audit_process.kill()
        killed.set()
        at_kill = recorded(db)
        await publisher
        # Killed while the first half was still being recorded (and before the second half existed).
        assert 5 <= at_kill < len(first)

        for event in second:
            await bus.publish(event)
        for event in first[:20]:
            await bus.publish(event)  # a publisher retrying: the same events again

        audit_process.start()

        async def all_recorded() -> bool:
            return recorded(db) >= EVENTS

        await eventually(all_recorded, timeout=120, interval=0.1)
        # Every copy handled (a stray redelivery would be recorded by now), then the final count.
        await rabbitmq_settled(amqp_url, lambda: asyncio.sleep(0, outbox_rows(data_dir)))
        audit_process.stop()
    finally:
        await bus.close()

    store = SqliteStore(db)
    chain = AuditChain(
        store, signer=CheckpointSigner.for_settings(AuditSettings(), data_dir), checkpoint_every=CHECKPOINT_EVERY
    )
    await store.start()
    try:
        ids = [doc["event_id"] async for doc in chain.scan()]
        assert sorted(ids) == sorted(e.id for e in stream)  # every event, exactly once
        verification = await chain.verify()
        assert (verification.intact, verification.count, verification.first_broken) == (True, EVENTS, None)
        assert verification.checkpoints == EVENTS // CHECKPOINT_EVERY
    finally:
        await store.close()
