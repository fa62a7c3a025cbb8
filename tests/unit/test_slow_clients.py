"""Slow and stalled clients (issue 17): partial headers are cut off after the configured time, a body that
stops arriving is a 408, concurrent uploads per organisation are capped (429 with Retry-After), and only
text formats are kept whole for the media check."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from services.intake.domain import ContentTap
from services.intake.limits import SMALL_UPLOAD_BYTES, SMALL_UPLOADS_FACTOR
from shared.config import Settings
from shared.edge import build_app, server_options
from shared.objects import one_chunk
from shared.server import HeaderDeadlineSite
from tests.conftest import Tokens, make_settings
from tests.helpers import document_reference, eventually
from tests.unit.test_intake_errors import outcome


@pytest.fixture
def slow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LHCIE_MAX_CONCURRENT_UPLOADS_PER_ORG", "2")  # intake's own, read when its app is built
    return make_settings(tmp_path / "data", http_header_timeout_seconds=1.0, http_body_idle_seconds=1.0)


@pytest.fixture
async def slow_stack(slow_settings: Settings) -> AsyncIterator[TestClient]:
    app = build_app(slow_settings, list(SPECS.values()))
    async with TestClient(TestServer(app, **server_options(slow_settings))) as client:
        yield client


@pytest.fixture
async def served(slow_settings: Settings) -> AsyncIterator[int]:
    """The app behind the listening socket ``lhcie run`` and ``lhcie serve`` use (shared/process.py)."""
    runner = web.AppRunner(build_app(slow_settings, list(SPECS.values())), **server_options(slow_settings))
    await runner.setup()
    site = HeaderDeadlineSite(runner, "127.0.0.1", 0, header_timeout=slow_settings.http_header_timeout_seconds)
    await site.start()
    yield site.port
    await runner.cleanup()


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "])
async def test_partial_headers_are_cut_off(served: int, sent: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(sent)  # and never the rest
    await writer.drain()
    started = time.monotonic()
    # The server closes the connection: the read ends (b"") instead of waiting for ever.
    assert await asyncio.wait_for(reader.read(), timeout=20) == b""
    assert time.monotonic() - started >= 0.5
    writer.close()


async def test_a_complete_request_is_answered_and_the_next_one_may_trickle_until_keep_alive(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), timeout=20)).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")  # the second request stalls: keep-alive ends it
    assert (await asyncio.wait_for(reader.read(), timeout=20)).endswith(b'{"status": "ok"}')
    writer.close()


async def test_a_stalled_body_is_408(slow_stack: TestClient, slow_settings: Settings) -> None:
    tokens = Tokens(slow_settings)
    body = json.dumps(document_reference()).encode()

    async def stalls() -> AsyncIterator[bytes]:
        yield body[:100]
        await asyncio.Event().wait()  # the client goes quiet half-way

    response = await slow_stack.post(
        "/fhir/DocumentReference", data=stalls(), headers={"Content-Type": "application/fhir+json", **tokens.headers()}
    )
    assert response.status == 408
    assert await response.json() == outcome(
        "REQUEST_TIMEOUT", "timeout", "No part of the request body arrived for 1 seconds."
    )


async def test_concurrent_uploads_per_organisation_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHCIE_MAX_CONCURRENT_UPLOADS_PER_ORG", "2")
    settings = make_settings(tmp_path / "data")
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as stack:
        await _uploads_capped(stack, Tokens(settings))


async def _uploads_capped(slow_stack: TestClient, tokens: Tokens) -> None:
    release = asyncio.Event()
    started = 0

    async def slow_upload() -> AsyncIterator[bytes]:
        nonlocal started
        started += 1
        yield b'{"resourceType":'
        await release.wait()
        yield b'"DocumentReference"}'

    headers = {"Content-Type": "application/fhir+json", **tokens.headers("RJ1")}
    holding = [
        asyncio.create_task(slow_stack.post("/fhir/DocumentReference", data=slow_upload(), headers=headers))
        for _ in range(2)
    ]
    await eventually(lambda: _true(started == 2))

    async def whole(body: bytes) -> AsyncIterator[bytes]:
        yield body

    async def third() -> aiohttp.ClientResponse | None:
        # Of unknown length, like the two holding their places: refused.
        response = await slow_stack.post(
            "/fhir/DocumentReference", data=whole(json.dumps(document_reference()).encode()), headers=headers
        )
        return response if response.status == 429 else None

    refused = await eventually(third, timeout=10)
    assert refused.headers["Retry-After"] == "5"
    assert await refused.json() == outcome(
        "RATE_LIMITED", "throttled", "Too many uploads in progress for RJ1; wait for one to finish."
    )
    # A small body of declared length is read in one go: the slow ones do not hold it back.
    small = await slow_stack.post("/fhir/DocumentReference", data=json.dumps(document_reference()), headers=headers)
    assert small.status == 202, await small.text()
    # Another organisation is not held up by RJ1's uploads.
    other = await slow_stack.post(
        "/fhir/DocumentReference",
        data=json.dumps(document_reference(custodian="RRV")),
        headers={"Content-Type": "application/fhir+json", **tokens.headers("RRV")},
    )
    assert other.status == 202, await other.text()
    release.set()
    finished = await asyncio.gather(*holding)
    assert [r.status for r in finished] == [422, 422]  # they were heard out, then refused for their content
    after = await slow_stack.post("/fhir/DocumentReference", data=json.dumps(document_reference()), headers=headers)
    assert after.status == 202  # the slots were given back


@pytest.mark.parametrize(
    ("content_type", "kept"),
    [("application/pdf", False), ("image/png", False), ("application/fhir+json", True), ("text/plain", True)],
)
async def test_only_text_formats_are_kept_whole_for_the_media_check(content_type: str, kept: bool) -> None:
    from shared.media import needs_whole

    tap = ContentTap(one_chunk(b"%PDF-1.4" + b"x" * 100_000), 10**9, keep_whole=needs_whole(content_type))
    assert sum([len(c) async for c in tap]) == 100_008
    assert bytes(tap.head) == (b"%PDF-1.4" + b"x" * 1016)
    assert (tap.whole is not None) is kept


async def _true(value: bool) -> bool:
    return value


async def test_small_uploads_have_a_cap_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHCIE_MAX_CONCURRENT_UPLOADS_PER_ORG", "2")
    settings = make_settings(tmp_path / "data")
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as stack:
        tokens = Tokens(settings)
        release = asyncio.Event()
        started = 0
        body = json.dumps(document_reference()).encode()
        assert len(body) <= SMALL_UPLOAD_BYTES

        async def slow_small() -> AsyncIterator[bytes]:
            nonlocal started
            started += 1
            yield body[:10]
            await release.wait()
            yield body[10:]

        # Declared up front, so the body is small whatever pace it arrives at.
        headers = {"Content-Type": "application/fhir+json", "Content-Length": str(len(body)), **tokens.headers("RJ1")}
        cap = 2 * SMALL_UPLOADS_FACTOR
        holding = [
            asyncio.create_task(stack.post("/fhir/DocumentReference", data=slow_small(), headers=headers))
            for _ in range(cap)
        ]
        await eventually(lambda: _true(started == cap))
        refused = await eventually(
            lambda: _refused(stack.post("/fhir/DocumentReference", data=body, headers=headers)), timeout=10
        )
        assert refused.headers["Retry-After"] == "5"
        release.set()
        assert [r.status for r in await asyncio.gather(*holding)] == [202] * cap


async def _refused(posting: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse | None:
    response = await posting
    return response if response.status == 429 else None
