"""Rest-hook delivery is concurrent with a per-host limit (issue 14): a receiver that accepts connections
and never answers delays only its own notifications, and holds at most its host's share of requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.notification.routes import DELIVERER
from services.notification.settings import NotificationSettings
from services.notification.subscriptions import PENDING
from tests.helpers import eventually
from tests.unit.test_notification_alerts import notification, teams_known
from tests.unit.test_notification_subscriptions import FHIR, subscription

PER_HOST = 2


@pytest.fixture(autouse=True)
def delivery_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_CONCURRENCY_PER_HOST", str(PER_HOST))
    # The black hole must outlast the test's generous wait by far, so that nothing here is a race.
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_TIMEOUT_SECONDS", "120")
    # Only the test drives delivery (the background pass would start it at a moment of its own).
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_TICK_SECONDS", "3600")


class BlackHole:
    """Accepts TCP connections and never answers, like a receiver behind a dead load balancer."""

    def __init__(self) -> None:
        self.open: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self._release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open.add(writer)
        try:
            await self._release.wait()
        finally:
            self.open.discard(writer)
            writer.close()

    def release(self) -> None:
        self._release.set()


@pytest.fixture
async def black_hole() -> AsyncIterator[tuple[BlackHole, int]]:
    hole = BlackHole()
    server = await asyncio.start_server(hole.handle, "127.0.0.1", 0)
    yield hole, server.sockets[0].getsockname()[1]
    hole.release()
    server.close()
    with contextlib.suppress(Exception):
        await server.wait_closed()


@pytest.fixture
async def healthy() -> AsyncIterator[tuple[list[str], int]]:
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(request.headers["X-LHCIE-Subscription"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield got, server.port
    await server.close()


async def create(stack: TestClient, tokens: Any, endpoint: str) -> str:
    response = await stack.post(
        "/fhir/Subscription", json=subscription(endpoint), headers={**FHIR, **tokens.headers("RJ1")}
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def test_a_black_holed_receiver_delays_no_other_subscriber(
    stack: TestClient, tokens: Any, black_hole: tuple[BlackHole, int], healthy: tuple[list[str], int]
) -> None:
    hole, hole_port = black_hole
    got, healthy_port = healthy
    n = notification(stack)
    await teams_known(stack)
    stuck = [await create(stack, tokens, f"http://127.0.0.1:{hole_port}/hook") for _ in range(PER_HOST + 1)]
    # Delivery takes subscriptions in id order: make sure a healthy one comes after a black-holed one, so
    # that a one-at-a-time deliverer would make it wait behind the black hole.
    fine = [await create(stack, tokens, f"http://127.0.0.1:{healthy_port}/hook")]
    while max(fine) < min(stuck):
        fine.append(await create(stack, tokens, f"http://127.0.0.1:{healthy_port}/hook"))

    deliverer = stack.server.app[DELIVERER]
    passing = asyncio.create_task(deliverer.run_once())
    try:
        # Every healthy subscriber gets its handshake while the black-holed ones are still waiting.
        await eventually(lambda: _async(set(got) == set(fine)), timeout=30)
        await eventually(lambda: _async(len(hole.open) == PER_HOST), timeout=30)
        assert not passing.done()
        assert hole.accepted == PER_HOST  # the host's limit: the third waits for a place...

        async def settled() -> dict[str, Any] | None:
            rows = {row["subscription"]: row for row in await n.subscriptions.next_for_each()}
            return rows if set(rows) == set(stuck) else None

        rows = await eventually(settled, timeout=30)  # ...and the healthy ones are all recorded as delivered
        assert not passing.done()
        waiting = [rows[s] for s in stuck if rows[s]["status"] == PENDING and rows[s]["attempts"] == 0]
        assert len(waiting) == 1  # unclaimed: no lease runs while it waits for a place
    finally:
        passing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await passing


async def _async(value: bool) -> bool:
    return value


async def test_one_organisations_dead_receivers_cannot_take_every_place(
    stack: TestClient, tokens: Any, healthy: tuple[list[str], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    got, healthy_port = healthy
    n = notification(stack)
    deliverer = stack.server.app[DELIVERER]
    await deliverer.close()
    # Three places in all, two per organisation: RJ1's three dead receivers (each on a host of its own, so
    # the per-host limit is not what holds them) would take all three without the organisation's limit.
    monkeypatch.setattr(
        n,
        "settings",
        NotificationSettings(
            webhook_allowed_hosts="127.0.0.1",
            webhook_timeout_seconds=120,
            webhook_tick_seconds=3600,
            webhook_concurrency=3,
            webhook_concurrency_per_organisation=2,
        ),
    )
    await deliverer.start()
    hole = BlackHole()
    servers = [await asyncio.start_server(hole.handle, "127.0.0.1", 0) for _ in range(3)]
    try:
        await teams_known(stack)
        for server in servers:
            await create(stack, tokens, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook")
        await deliverer.dispatch()
        await eventually(lambda: _async(len(hole.open) == 2), timeout=30)
        response = await stack.post(
            "/fhir/Subscription",
            json=subscription(
                f"http://127.0.0.1:{healthy_port}/hook", criteria="Communication?recipient=CareTeam/rrv-haematology"
            ),
            headers={**FHIR, **tokens.headers("RRV")},
        )
        assert response.status == 201, await response.text()
        other = (await response.json())["id"]
        await deliverer.dispatch()
        await eventually(lambda: _async(got == [other]), timeout=30)
        assert hole.accepted == 2  # RJ1's third still waits for one of its own organisation's places
    finally:
        hole.release()
        for server in servers:
            server.close()


async def test_a_committed_notification_is_sent_at_once_not_at_the_next_tick(
    stack: TestClient, tokens: Any, healthy: tuple[list[str], int]
) -> None:
    # The tick is an hour here: only the wake-up after the commit (issue 21: fan-out p99 under a second)
    # can start this delivery, and nothing in the test calls dispatch().
    got, port = healthy
    await teams_known(stack)
    sub = await create(stack, tokens, f"http://127.0.0.1:{port}/hook")
    await eventually(lambda: _async(got == [sub]), timeout=30)
