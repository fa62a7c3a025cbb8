"""The coordinator console's live stream: signed query token, events in order, resume without loss."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.unit.test_notification_alerts import publish, stored_event, teams_known

COORDINATOR = {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}


async def grant(stack: TestClient, tokens: Any) -> dict[str, Any]:
    response = await stack.post("/alerts/stream-token?team=CareTeam/rj1-lung", headers=tokens.headers(**COORDINATOR))
    assert response.status == 200
    return await response.json()


async def read_events(response: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    event_id = None
    while len(events) < n:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((str(event_id), json.loads(line[6:])))
    return events


async def test_stream_delivers_new_alerts_and_resumes_after_the_last_event_id(stack: TestClient, tokens: Any) -> None:
    await teams_known(stack)
    start = await grant(stack, tokens)
    first, second, third = (stored_event() for _ in range(3))
    stream = await stack.get(f"/alerts/stream?token={start['token']}&lastEventId={start['lastEventId']}")
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    await publish(stack, first)
    [(first_id, event)] = await read_events(stream, 1)
    assert event["kind"] == "raised"
    assert event["alert"]["about"] == [{"reference": f"DocumentReference/{first.data['document']['document_id']}"}]
    stream.close()

    # Disconnected while two more alerts arrive: a reconnect with Last-Event-ID gets both, in order.
    await publish(stack, second)
    await publish(stack, third)
    again = await grant(stack, tokens)
    resumed = await stack.get(f"/alerts/stream?token={again['token']}", headers={"Last-Event-ID": first_id})
    got = await read_events(resumed, 2)
    assert [e["alert"]["about"][0]["reference"] for _, e in got] == [
        f"DocumentReference/{second.data['document']['document_id']}",
        f"DocumentReference/{third.data['document']['document_id']}",
    ]
    assert [int(i) for i, _ in got] == sorted(int(i) for i, _ in got)
    resumed.close()


async def test_stream_refuses_a_missing_or_forged_token_and_other_mdts(stack: TestClient, tokens: Any) -> None:
    for query in ("", "?token=abc.def"):
        response = await stack.get(f"/alerts/stream{query}")
        assert response.status == 401
        assert (await response.json())["issue"][0]["code"] == "login"
    good = await grant(stack, tokens)
    body, _, signature = good["token"].partition(".")
    response = await stack.get(f"/alerts/stream?token={body}.{'0' * len(signature)}")
    assert response.status == 401
    other = await stack.post(
        "/alerts/stream-token?team=CareTeam/rj1-lung",
        headers=tokens.headers("RRV", "mdt-coordinator", mdt="rrv-haematology"),
    )
    assert other.status == 403


async def test_console_page_is_served_without_a_token(stack: TestClient) -> None:
    page = await stack.get("/console/")
    assert page.status == 200
    assert "MDT coordinator console" in await page.text()
    script = await stack.get("/console/static/console.js")
    assert script.status == 200
