"""A stopping process tells every client to close the connection after its answer: a request sent on a
kept-alive connection just as the server closes it would be cut off half-way (``ServerDisconnectedError``,
which issue 17's fault run once saw during a graceful restart)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from shared.app_keys import RUNTIME


async def test_answers_close_the_connection_once_the_process_is_draining(stack: TestClient) -> None:
    before = await stack.get("/healthz")
    assert before.status == 200
    assert before.headers.get("Connection", "").lower() != "close"  # kept alive while serving

    stack.server.app[RUNTIME].health.draining = True
    try:
        during = await stack.get("/healthz")
        assert during.status == 200
        assert during.headers.get("Connection", "").lower() == "close"
        unready = await stack.get("/readyz")
        assert unready.status == 503
        assert unready.headers.get("Connection", "").lower() == "close"
    finally:
        stack.server.app[RUNTIME].health.draining = False
