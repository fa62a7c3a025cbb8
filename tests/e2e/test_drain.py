"""SIGTERM with work in flight (issue 17, graceful operations): service processes on the real RabbitMQ and
the S3 API server. Readiness fails first while the listener still accepts; the request in flight
completes; a message in flight is finished, or handed back unacknowledged when the drain limit cuts it
off, never lost; the process exits within LHCIE_DRAIN_SECONDS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from shared.auth import EmbeddedIssuer
from shared.process import UNREADY_SECONDS
from shared.topology import STORAGE
from tests.e2e.processes import ServiceProcesses
from tests.helpers import document_reference, eventually, rabbitmq_queues, read_response
from tests.s3server import CREDENTIALS, MotoServer, s3_credentials, s3_server  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

DRAIN = 6.0
# The services a document needs to be accepted and filed (fewer processes: a loaded machine starts them sooner).
NEEDED = ("agreements", "intake", "storage")
# Closing after the drain (outbox flush, store, bus connection) and the interpreter's exit.
CLOSING = 3.0


@pytest.fixture
def services(tmp_path: Path, amqp_url: str, s3_server: MotoServer) -> Iterator[ServiceProcesses]:
    procs = ServiceProcesses(
        tmp_path / "data",
        amqp_url,
        extra_env={
            "LHCIE_OBJECT_STORE": "s3",
            "LHCIE_S3_ENDPOINT_URL": s3_server.url,
            "LHCIE_S3_BUCKET": f"lhcie-drain-{uuid.uuid4().hex[:12]}",
            "LHCIE_S3_PATH_STYLE": "true",
            # A paused bucket holds a storage handler for longer than the drain limit (no retry cuts it short).
            "LHCIE_S3_READ_TIMEOUT": "120",
            "LHCIE_S3_MAX_ATTEMPTS": "1",
            "LHCIE_DRAIN_SECONDS": str(DRAIN),
            **CREDENTIALS,
        },
    )
    procs.data_dir.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "lhcie.cli", "storage", "init"],
        env=procs.env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield procs
    s3_server.resume()
    procs.stop_all()


def start(services: ServiceProcesses, *names: str) -> None:
    services.start(*names, wait=False)
    for name in names:
        services.wait_ready(name, timeout=300)


def system_headers(services: ServiceProcesses) -> dict[str, str]:
    issuer = EmbeddedIssuer(services.data_dir, issuer="lhcie-embedded", audience="lhcie")
    return {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='system')}", "Content-Type": "application/fhir+json"}


async def exit_of(proc: subprocess.Popen[bytes], started: float) -> tuple[int, float]:
    code = await asyncio.to_thread(proc.wait, DRAIN + 30)
    return code, time.monotonic() - started


async def stored(http: aiohttp.ClientSession, services: ServiceProcesses, doc_id: str) -> None:
    headers = system_headers(services)

    async def filed() -> bool:
        async with http.get(f"{services.url('intake')}/fhir/DocumentReference/{doc_id}", headers=headers) as r:
            return r.status == 200

    await eventually(filed, timeout=60)


def storage_queue(services: ServiceProcesses) -> tuple[int, int]:
    """(ready, unacknowledged) of storage's queue."""
    return rabbitmq_queues(services.amqp_url)[STORAGE.name]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection for every request: a probe must see whether the listener still accepts.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def test_readiness_fails_first_and_the_request_in_flight_completes(
    services: ServiceProcesses, http: aiohttp.ClientSession
) -> None:
    start(services, *NEEDED)
    intake = services.procs["intake"]
    url = services.url("intake")
    body = json.dumps(document_reference()).encode()
    half_sent, unready_seen = asyncio.Event(), asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        half_sent.set()
        await unready_seen.wait()  # the rest of the body only once the drain has visibly begun
        yield body[len(body) // 2 :]

    post = asyncio.create_task(
        http.post(f"{url}/fhir/DocumentReference", data=trickle(), headers=system_headers(services))
    )
    await half_sent.wait()
    started = time.monotonic()
    intake.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        # A refused connection here (the listener closed before readiness failed) fails the test.
        async with http.get(f"{url}/readyz") as r:
            return r.status == 503 and "draining" in await r.text()

    await eventually(draining, timeout=DRAIN)
    unready_at = time.monotonic() - started
    unready_seen.set()
    async with await post as response:
        assert response.status == 202, await response.text()
        doc_id = (await response.json())["id"]
    code, elapsed = await exit_of(intake, started)
    services.procs.pop("intake")
    print(
        f"\nintake: unready after {unready_at:.2f}s, request answered 202, exit {code} after {elapsed:.2f}s "
        f"(drain limit {DRAIN:.0f}s)"
    )
    assert code == 0, services.log("intake")[-2000:]
    assert elapsed < DRAIN + CLOSING
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"{url}/readyz")
    # The accepted document is filed (the event went out before the process closed its outbox).
    start(services, "intake")
    await stored(http, services, doc_id)


async def test_a_post_whose_body_arrives_as_the_listener_closes_is_answered(services: ServiceProcesses) -> None:
    """The long fault run's post (seed 37) sent as intake's listener closed, held unanswered until the drain
    limit: its headers are in and its handler under way, the rest of its body comes once the stop has reached
    the connections (tests/unit/test_listener_closing.py drives the same in one process)."""
    start(services, *NEEDED)
    intake = services.procs["intake"]
    port = int(services.url("intake").rsplit(":", 1)[1])
    writers: list[asyncio.StreamWriter] = []

    async def connect() -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        return reader

    try:
        # Kept alive and idle: the process closes it when its stop reaches the connections (UNREADY_SECONDS
        # after the signal, as the listener closes), the moment the rest of the body is sent after.
        idle = await connect()
        writers[0].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response(idle))[0] == 200
        posting = await connect()
        body = json.dumps(document_reference()).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in {**system_headers(services), "Content-Length": len(body)}.items())
        # "Expect: 100-continue": the interim answer says the handler has the request (a condition, not a pause).
        writers[1].write(
            f"POST /fhir/DocumentReference HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n{head}\r\n".encode()
            + body[: len(body) // 2]
        )
        assert (await asyncio.wait_for(posting.readuntil(b"\r\n\r\n"), timeout=30)).startswith(b"HTTP/1.1 100")
        started = time.monotonic()
        intake.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(idle.read(), timeout=UNREADY_SECONDS + 10) == b""
        closed = time.monotonic() - started
        writers[1].write(body[len(body) // 2 :])
        status, headers, answer = await asyncio.wait_for(read_response(posting), timeout=3)
        answered = time.monotonic() - started
        code, elapsed = await exit_of(intake, started)
        services.procs.pop("intake")
    finally:
        for writer in writers:
            writer.close()
    print(
        f"\nintake: stop reached the connections after {closed:.2f}s, the post answered {status} after "
        f"{answered:.2f}s, exit {code} after {elapsed:.2f}s (drain limit {DRAIN:.0f}s)"
    )
    assert (status, headers["connection"]) == (202, "close"), answer
    assert code == 0, services.log("intake")[-2000:]
    assert elapsed < DRAIN - 1  # nothing waited for the drain limit
    start(services, "intake")
    async with aiohttp.ClientSession() as http:
        await stored(http, services, json.loads(answer)["id"])


@pytest.mark.parametrize("bucket_back", [True, False], ids=["finished", "redelivered"])
async def test_a_message_in_flight_is_finished_or_left_for_redelivery(
    services: ServiceProcesses, http: aiohttp.ClientSession, s3_server: MotoServer, bucket_back: bool
) -> None:
    start(services, *NEEDED)
    services.stop("storage")
    async with http.post(
        f"{services.url('intake')}/fhir/DocumentReference",
        data=json.dumps(document_reference()),
        headers=system_headers(services),
    ) as response:
        assert response.status == 202
        doc_id = (await response.json())["id"]

    async def waiting() -> bool:
        return await asyncio.to_thread(storage_queue, services) == (1, 0)

    await eventually(waiting, timeout=30)
    # The bucket stops answering: storage takes the message and its handler waits on the bucket.
    s3_server.pause()
    services.start("storage", wait=False)

    async def taken() -> bool:
        return await asyncio.to_thread(storage_queue, services) == (0, 1)

    await eventually(taken, timeout=60)
    storage = services.procs["storage"]
    started = time.monotonic()
    storage.send_signal(signal.SIGTERM)
    if bucket_back:
        s3_server.resume()
    code, elapsed = await exit_of(storage, started)
    services.procs.pop("storage")
    # The broker learns of the closed connection a moment after the exit (it then hands back what the
    # connection held): wait for the counts to reach what this case expects, then say what they were.
    expected = (0, 0) if bucket_back else (1, 0)

    async def queue_is_expected() -> bool:
        return await asyncio.to_thread(storage_queue, services) == expected

    with contextlib.suppress(TimeoutError, AssertionError):
        await eventually(queue_is_expected, timeout=30)
    after = storage_queue(services)
    print(
        f"\nstorage ({'bucket back' if bucket_back else 'bucket still paused'}): exit {code} after "
        f"{elapsed:.2f}s (drain limit {DRAIN:.0f}s), queue (ready, unacked) after: {after}"
    )
    assert code == 0, services.log("storage")[-2000:]
    if bucket_back:
        assert elapsed < DRAIN
        assert after == (0, 0)  # finished and acknowledged by the stopping process
    else:
        assert DRAIN - 0.5 <= elapsed < DRAIN + CLOSING  # cut off at the limit, not before
        assert after == (1, 0)  # handed back unacknowledged, waiting for the next consumer
        assert "bus.drain_cut_off" in services.log("storage")
        s3_server.resume()
    start(services, "storage")
    await stored(http, services, doc_id)
