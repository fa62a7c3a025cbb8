"""Two notification processes on one store and the real RabbitMQ: every alert is raised once, every
escalation fires once; and documents that arrived while the service was down are all alerted.

Both processes run ``python -m services.notification`` on a private vhost with the SAME data directory
(one SQLite file, shared through WAL and busy_timeout, as two replicas would share MongoDB). Escalation is
shortened to seconds by ``LHCIE_NOTIFICATION_ESCALATION_AFTER_SECONDS``. A console attached to either
replica sees an alert the other raised at once, long before its poll would find it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.notification.domain import ESCALATE
from shared.auth import EmbeddedIssuer
from shared.bus import QueueSpec
from shared.bus.amqp import AmqpBus
from shared.events import CareTeamState, Event, OrganisationState, RoutingKey
from shared.timers import PENDING
from shared.topology import ALL_QUEUES, NOTIFICATION
from tests.helpers import PUBLISH_TAP, SERVE_ENV, eventually, free_port, outbox_rows, rabbitmq_settled
from tests.unit.test_notification_alerts import stored_event

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parents[2]
WATCH = QueueSpec("test.notification-watch", (RoutingKey.ALERT_RAISED, RoutingKey.ALERT_ESCALATED))


class NotificationProcesses:
    def __init__(self, amqp_url: str, data_dir: Path, **overrides: str) -> None:
        self.env = {
            **os.environ,
            **SERVE_ENV,
            "LHCIE_BUS": "amqp",
            "LHCIE_AMQP_URL": amqp_url,
            "LHCIE_OBJECT_STORE": "fs",
            "LHCIE_DATA_DIR": str(data_dir),
            "LHCIE_NOTIFICATION_ESCALATION_AFTER_SECONDS": "1",
            "LHCIE_NOTIFICATION_TIMER_TICK_SECONDS": "0.1",
            **overrides,
        }
        self.data_dir = data_dir
        self.amqp_url = amqp_url
        self.procs: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(self) -> int:
        port = free_port()
        with (self.data_dir / f"notification-{port}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.notification"],
                cwd=ROOT,
                env={**self.env, "LHCIE_HTTP_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, port))
        return port

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _, port in self.procs:

                async def up(port: int = port) -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientError:
                        return False

                await eventually(up, timeout=60, interval=0.2)

    def pending_timers(self) -> int:
        """Escalation timers not yet fired or cancelled: the only source of events besides the queue in this
        test (digest and breach-check timers are due days later)."""
        db = self.data_dir / "notification.sqlite3"
        if not db.exists():
            return 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute(
                "SELECT COUNT(*) FROM c_timers WHERE json_extract(doc, '$.status') = ? "
                "AND json_extract(doc, '$.kind') = ?",
                (PENDING, ESCALATE),
            ).fetchone()[0]
        except sqlite3.OperationalError:
            return 0  # not created yet
        finally:
            conn.close()

    async def settled(self) -> None:
        await rabbitmq_settled(
            self.amqp_url, lambda: asyncio.sleep(0, outbox_rows(self.data_dir)), only={NOTIFICATION.name}
        )

    def logs(self) -> str:
        return "\n".join(log.read_text()[-4000:] for log in self.data_dir.glob("notification-*.log"))

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def processes(amqp_url: str, tmp_path: Path) -> Iterator[NotificationProcesses]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    running = NotificationProcesses(amqp_url, data_dir)
    yield running
    running.stop()


@pytest.fixture
async def bus(amqp_url: str) -> AsyncIterator[AmqpBus]:
    bus = AmqpBus(amqp_url, connection_name="notification-replicas-test")
    await bus.start()
    await bus.declare([*ALL_QUEUES, WATCH, PUBLISH_TAP])
    yield bus
    await bus.close()


async def publish_policy(bus: AmqpBus) -> None:
    for payload, key in (
        (
            OrganisationState(ods_code="RJ1", name="Guy's and St Thomas'", kind="acute-trust", version=1),
            RoutingKey.POLICY_ORGANISATION_UPDATED,
        ),
        (
            CareTeamState(careteam_id="rj1-lung", name="Lung MDT", organisation="RJ1", tumour_site="lung", version=1),
            RoutingKey.POLICY_CARETEAM_UPDATED,
        ),
    ):
        await bus.publish(Event.new(key, payload, source="urn:lhcie:service:agreements"))


async def drain(bus: AmqpBus) -> list[dict[str, Any]]:
    seen = []
    while (body := await bus.get(WATCH.name)) is not None:
        event = Event.from_bytes(body)
        seen.append({"type": str(event.type), "event_id": event.id, **event.data})
    return seen


async def test_two_replicas_raise_once_and_escalate_each_step_exactly_once(
    bus: AmqpBus, processes: NotificationProcesses
) -> None:
    processes.start()
    processes.start()
    await processes.ready()
    await publish_policy(bus)
    await processes.settled()  # the replicas take in the policy first (a later one is reconciled anyway)
    documents = [stored_event() for _ in range(3)]
    for event in documents:
        await bus.publish(event)
        await bus.publish(event)  # redelivered: still one alert

    seen: list[dict[str, Any]] = []

    async def all_escalated() -> bool:
        seen.extend(await drain(bus))
        return sum(e["type"] == "alert.escalated" for e in seen) >= 2 * len(documents)

    await eventually(all_escalated, timeout=60, interval=0.2)
    # No timer left to fire and every event handled: a duplicate would be in the watch queue now.
    await eventually(lambda: asyncio.sleep(0, processes.pending_timers() == 0), timeout=30)
    await processes.settled()
    seen.extend(await drain(bus))

    # Replicas share one outbox, so a relay may publish an event twice (same event id: consumers drop it, as
    # docs/architecture.md's at-least-once delivery says). What must never happen is a second, distinct event.
    distinct = {e["event_id"]: e for e in seen}.values()
    raised = [e["alert_id"] for e in distinct if e["type"] == "alert.raised"]
    escalated = sorted((e["alert_id"], e["escalated_to"]) for e in distinct if e["type"] == "alert.escalated")
    assert len(raised) == len(set(raised)) == len(documents)
    assert escalated == sorted(
        (alert, f"CareTeam/rj1-lung#{to}") for alert in raised for to in ("deputy-coordinator", "mdt-lead")
    )


async def test_documents_stored_while_notification_was_down_are_all_alerted(
    bus: AmqpBus, processes: NotificationProcesses
) -> None:
    await publish_policy(bus)
    documents = [stored_event() for _ in range(5)]
    for event in documents:  # no notification process is running
        await bus.publish(event)
    processes.start()
    await processes.ready()
    seen: list[dict[str, Any]] = []

    async def all_raised() -> bool:
        seen.extend(e for e in await drain(bus) if e["type"] == "alert.raised")
        return len({e["event_id"] for e in seen}) >= len(documents)

    try:
        await eventually(all_raised, timeout=60, interval=0.2)
    except AssertionError:
        raise AssertionError(processes.logs()) from None
    distinct = {e["event_id"]: e for e in seen}.values()
    assert sorted(e["document"]["document_id"] for e in distinct) == sorted(
        e.data["document"]["document_id"] for e in documents
    )


# Longer than the test waits for anything: a stream that sees the other replica's alert was woken by the bus.
SLOW_POLL_SECONDS = 60.0


async def next_change(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The next SSE frame that carries an alert change (heartbeats and comments skipped)."""
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("data: "):
            frame: dict[str, Any] = json.loads(line[6:])
            if "alert" in frame:
                return frame


async def test_a_console_on_either_replica_sees_the_other_replicas_alert_at_once(
    bus: AmqpBus, amqp_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # No escalation, no timer tick (each tick's commit wakes the process's streams) and no poll within the
    # test: nothing but the bus can wake a stream for an alert another replica committed.
    processes = NotificationProcesses(
        amqp_url,
        data_dir,
        LHCIE_NOTIFICATION_STREAM_POLL_SECONDS=str(SLOW_POLL_SECONDS),
        LHCIE_NOTIFICATION_TIMER_TICK_SECONDS=str(SLOW_POLL_SECONDS),
        LHCIE_NOTIFICATION_ESCALATION_AFTER_SECONDS="3600",
    )
    try:
        ports = [processes.start(), processes.start()]
        await processes.ready()
        await publish_policy(bus)
        await processes.settled()
        issuer = EmbeddedIssuer(
            data_dir, issuer=SERVE_ENV["LHCIE_JWT_ISSUER"], audience=SERVE_ENV["LHCIE_JWT_AUDIENCE"]
        )
        coordinator = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='mdt-coordinator', mdt='rj1-lung')}"}
        async with aiohttp.ClientSession() as http:
            streams = []
            for port in ports:
                base = f"http://127.0.0.1:{port}"
                async with http.post(f"{base}/alerts/stream-token?team=CareTeam/rj1-lung", headers=coordinator) as r:
                    assert r.status == 200, await r.text()
                    grant = await r.json()
                stream = await http.get(
                    f"{base}/alerts/stream?token={grant['token']}&lastEventId={grant['lastEventId']}"
                )
                assert stream.status == 200
                streams.append(stream)
            # One document, so one replica raises the alert and the other's stream has only the bus to hear it.
            document = stored_event()
            await bus.publish(document)
            async with asyncio.timeout(SLOW_POLL_SECONDS / 3):
                changes = await asyncio.gather(*(next_change(stream) for stream in streams))
            for stream in streams:
                stream.close()
        about = f"DocumentReference/{document.data['document']['document_id']}"
        assert [(c["kind"], c["alert"]["about"][0]["reference"]) for c in changes] == [("raised", about)] * 2
    except TimeoutError:
        raise AssertionError(f"a replica's stream did not hear of the alert: {processes.logs()}") from None
    finally:
        processes.stop()
