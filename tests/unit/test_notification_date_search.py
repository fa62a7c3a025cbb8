"""``GET /fhir/Communication?sent=...`` follows FHIR date search (shared/fhir/dates.py): a value stands for
all of its precision, and repeated values must all hold, whatever their order."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from tests.unit.test_notification_alerts import (
    PATHOLOGY,
    alert_count,
    alerts,
    entries,
    publish,
    stored_event,
    teams_known,
)


async def ids(stack: TestClient, tokens: Any, query: str) -> set[str]:
    return {a["id"] for a in entries(await alerts(stack, tokens, query))}


async def test_sent_is_searched_by_the_fhir_date_rules(stack: TestClient, tokens: Any) -> None:
    await teams_known(stack)
    await publish(stack, stored_event(type_code=PATHOLOGY))
    await publish(stack, stored_event(type_code=PATHOLOGY))
    found = await alert_count(stack, tokens, 2)
    every = {a["id"] for a in found}
    first = found[0]
    today = date.fromisoformat(first["sent"][:10])
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)

    # A second written in full stands for that whole second (the old parser made it an empty range).
    same_second = await ids(stack, tokens, f"&sent={first['sent'][:19]}Z")
    assert first["id"] in same_second
    assert await ids(stack, tokens, f"&sent=eq{today}") == every
    # Repeated values are ANDed, in any order (the old parser kept whichever lower bound came last).
    assert await ids(stack, tokens, f"&sent=ge{tomorrow}&sent=ge{today}") == set()
    assert await ids(stack, tokens, f"&sent=ge{today}&sent=lt{tomorrow}") == every
    assert await ids(stack, tokens, f"&sent=ne{today}") == set()
    assert await ids(stack, tokens, f"&sent=ne{yesterday}&sent=sa{yesterday}") == every
    assert await ids(stack, tokens, f"&sent=eb{today}") == set()
