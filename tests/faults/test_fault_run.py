"""Fault injection (issue 17): the five services as processes on a real RabbitMQ node and a real S3 API
server, while a hospital system posts documents steadily, get ``kill -9`` in turn at random moments and
come back, and are restarted gracefully (SIGTERM, drained, ready again: a rolling restart); the broker is
restarted, the S3 server paused, a store locked. Then every document that got a 2xx must be stored once
with its bytes, alerted once, and have its whole audit trail, the chain must verify, the dead-letter queues
must hold only the one message that was meant to fail, and every graceful stop must have exited 0 within
the drain limit with no post cut off half-way.

``make test`` runs the short profile (each service killed once and restarted gracefully once, one of each
other fault); ``make soak`` the long one (100 kills, 10 graceful restarts, three broker restarts, S3 and
store outages). Each prints its table and writes it to ``test-artefacts/faults-<profile>.md`` (the tables
are in the README, Operate: Faults), and keeps the services' logs in ``test-artefacts/faults-<profile>-logs``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from shared.auth import EmbeddedIssuer
from shared.bus.amqp import AmqpBus
from shared.events import EXCHANGE, RoutingKey
from shared.topology import ALL_QUEUES, CARE
from tests.e2e.processes import SERVICES, ServiceProcesses
from tests.faults.broker import PrivateRabbitMQ
from tests.faults.injection import DRAIN_SECONDS, LONG, SHORT, STOP_MARGIN, Injector, Profile, plan
from tests.faults.reconcile import Tally, reconcile
from tests.faults.sender import Sender
from tests.helpers import PUBLISH_TAP, eventually, outbox_rows
from tests.s3server import CREDENTIALS, MotoServer, start_moto

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
# Log codes of an error no handler expected: a 500 (shared/edge.py), a consumer's handler failing with
# something other than an outage or a contract breach (shared/bus/base.py), the outbox relay failing.
UNHANDLED = frozenset({"HTTP500", "BUS004", "OUT002"})
POISON_ID = "fault-run-poison"  # the one message meant to fail: a document.received that breaks the contract
CONSUMED = [q.name for q in ALL_QUEUES if q is not CARE]  # care is not one of the five processes


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ(tmp_path / "rabbitmq")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = start_moto(tmp_path / "moto")
    yield server
    server.stop()


async def settled(broker: PrivateRabbitMQ, data_dir: Path, timeout: float = 600) -> None:
    """``tests.helpers.rabbitmq_settled`` on the private node (the tap was declared before any traffic):
    two probes in a row find no message ready or unacked in a consumed queue and every outbox empty, and
    the tap's count did not move between them (work in flight at the first probe is in a queue, an outbox
    or moves the count by the second). One ``rabbitmqctl`` call a probe: each starts an Erlang VM, seconds
    on a loaded machine, and the probe this replaces made three."""
    last: list[int | None] = [None]

    async def quiet() -> bool:
        queues = await asyncio.to_thread(broker.queues)
        tap = sum(queues[PUBLISH_TAP.name])
        idle = not any(r or u for name, (r, u) in queues.items() if name in CONSUMED) and not outbox_rows(data_dir)
        before, last[0] = last[0], tap if idle else None
        return idle and before == tap

    await eventually(quiet, timeout=timeout, interval=1)


def unhandled_errors(data_dir: Path) -> list[str]:
    """'<service> <code> <last line of the exception>' for every unhandled error the services logged."""
    found = []
    for name in SERVICES:
        path = data_dir / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line an interpreter wrote itself, outside the JSON logging
            if isinstance(record, dict) and record.get("code") in UNHANDLED:
                cause = (record.get("exception") or record.get("message", "")).strip().splitlines()
                found.append(f"{name} {record['code']} {cause[-1] if cause else ''}"[:300])
    return found


async def publish_poison(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                b'{"not": "an event"}',
                message_id=POISON_ID,
                type=RoutingKey.DOCUMENT_RECEIVED.value,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=RoutingKey.DOCUMENT_RECEIVED.value,
        )
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "profile",
    [
        pytest.param(SHORT, marks=[pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.timeout(900)], id="short"),
        pytest.param(LONG, marks=[pytest.mark.soak, pytest.mark.rabbitmq, pytest.mark.timeout(5400)], id="long"),
    ],
)
async def test_no_accepted_document_is_lost_or_doubled_under_faults(
    tmp_path: Path, broker: PrivateRabbitMQ, moto: MotoServer, profile: Profile
) -> None:
    seed = int(os.environ.get("LHCIE_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    procs = ServiceProcesses(
        data_dir,
        broker.url,
        extra_env={
            **CREDENTIALS,
            "LHCIE_OBJECT_STORE": "s3",
            "LHCIE_S3_ENDPOINT_URL": moto.url,
            "LHCIE_S3_PATH_STYLE": "true",
            "LHCIE_S3_BUCKET": "lhcie-faults",
            "LHCIE_S3_READ_TIMEOUT": "3",
            "LHCIE_S3_MAX_ATTEMPTS": "2",
            "LHCIE_DRAIN_SECONDS": str(DRAIN_SECONDS),
        },
    )

    bus = AmqpBus(broker.url, connection_name="fault-run")
    await bus.start()
    try:
        await bus.declare([*ALL_QUEUES, PUBLISH_TAP])
    finally:
        await bus.close()
    await publish_poison(broker.url)
    init = await asyncio.create_subprocess_exec(sys.executable, "-m", "lhcie.cli", "storage", "init", env=procs.env())
    assert await init.wait() == 0

    started = time.monotonic()
    try:
        procs.start()
        issuer = EmbeddedIssuer(data_dir, issuer="lhcie-embedded", audience="lhcie")
        headers = {
            "system": {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='system', ttl=7200)}"},
            "coordinator": {
                "Authorization": "Bearer " + issuer.mint(org="RJ1", role="mdt-coordinator", mdt="rj1-lung", ttl=7200)
            },
            "operator": {"Authorization": f"Bearer {issuer.mint(org='LHCIE', role='exchange-operator', ttl=7200)}"},
        }
        sender = Sender(
            f"{procs.url('intake')}/fhir/DocumentReference",
            {**headers["system"], "Content-Type": "application/fhir+json"},
            profile.post_interval,
        )
        injector = Injector(procs, broker, moto, rng, profile)
        faults = plan(profile, rng)
        injector.note(f"seed {seed}: {len(faults)} faults")
        injector.note(f"services ready after {time.monotonic() - started:.1f} s")
        stream = asyncio.create_task(sender.run())
        try:
            await injector.run(faults)
        finally:
            sender.stopping.set()
            await stream
        injector.note("stream stopped")
        await settled(broker, data_dir)
        injector.note("settled")
        tally = await reconcile(
            Tally(profile.name, injector.injected),
            sender,
            {name: procs.url(name) for name in SERVICES},
            headers,
            broker.url,
            lambda: settled(broker, data_dir),
        )
        # The posts go to intake: what they met while intake stopped and came back.
        during = sender.answered_within([w for w in injector.windows if w[0] == "intake"])
        tally.answers_graceful = Counter(answer for *_, answer in during)
        injector.note("reconciled")
        tally.minutes = (time.monotonic() - started) / 60
        tally.stops, tally.drain_seconds = injector.stops, DRAIN_SECONDS
        tally.unhandled = unhandled_errors(data_dir)
    finally:
        procs.stop_all()
        # The services' own logs outlive the run's temporary folder (pytest keeps only its last few): a
        # failure, a 5xx above all, is diagnosed from them.
        logs = ARTEFACTS / f"faults-{profile.name}-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            if (data_dir / f"{name}.log").exists():
                shutil.copyfile(data_dir / f"{name}.log", logs / f"{name}.log")

    table = tally.table()
    print(f"\nseed {seed}\n{table}")
    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / f"faults-{profile.name}.md").write_text(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, seed {seed}\n\n{table}\n\n"
        + "\n".join(injector.log)
        + "\n"
    )

    assert tally.accepted >= 10, table
    assert tally.clean, (
        f"{table}\n{tally.lost=}\n{tally.doubled=}\n{tally.alerts_missing=}\n"
        f"{tally.alerts_doubled=}\n{tally.audit_missing=}\n{tally.audit_doubled=}"
    )
    assert tally.chain["intact"] is True, table
    # A 500 or a handler's crash is a fault of the exchange even when the client's retry hid it.
    assert not tally.unhandled, "\n".join([table, *tally.unhandled])
    assert not [a for a in tally.answers if a.startswith("5") and a != "503"], table  # 503 only: an honest outage
    # Only what was meant to fail: the poison message, where a consumer of document.received put it.
    assert {q: len(r) for q, r in tally.dead_letters.items()} == {"storage.documents": 1, "audit.events": 1}, table
    assert all("NO REASON" not in r for reasons in tally.dead_letters.values() for r in reasons), table
    assert sum(injector.injected.values()) == sum(len(kind.split(" + ")) for kind, _ in faults)
    # Graceful restarts: every one exited on its own, cleanly, within the drain limit and the margin.
    assert len(injector.stops) == profile.graceful, table
    assert not injector.overdue, f"{table}\n{injector.overdue}"
    assert all(code == 0 for _, _, code, _ in injector.stops), f"{table}\n{injector.stops}"
    assert all(seconds <= DRAIN_SECONDS + STOP_MARGIN for _, seconds, _, _ in injector.stops), table
    if profile.graceful >= len(SERVICES):
        assert {name for name, *_ in injector.stops} == set(SERVICES), injector.stops
    # A drain finishes what it took: a post answered while intake was stopping and starting again is a 202
    # or a refused connection (intake down, one replica), never cut off half-way (a reset or a disconnect)
    # and never a 5xx but an honest 503. Nothing else struck intake in those windows (Injector.windows), but
    # the S3 server is everyone's: a storage restart's backlog can stall moto, and an upload that outlives
    # the S3 adapter's tries is refused with 503 and Retry-After, as anywhere else in the run (seed 37,
    # 2 December 2026: two posts waited 10 s on moto while storage's staging deletes timed out; one was
    # stored on its last try, the other answered 503 and accepted when sent again).
    honest = ("202", "503", "ClientConnectorError")
    cut_off = [f"{name}: sent {sent:+.2f} s, answered {at:+.2f} s: {answer}" for name, sent, at, answer in during]
    assert set(tally.answers_graceful) <= set(honest), "\n".join(
        [table, *(line for line in cut_off if not line.endswith(tuple(f": {a}" for a in honest)))]
    )
