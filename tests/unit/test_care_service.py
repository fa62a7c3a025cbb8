"""The care service's place in the exchange: in the one-process run and `lhcie serve care`, its own
queue fed with the policy, its CapabilityStatement entries, its own store."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from lhcie.cli import parser
from lhcie.services import SPECS
from shared.lifecycle import CONTEXTS
from shared.topology import ALL_QUEUES, CARE
from tests.unit.care_support import call, care_stack  # noqa: F401


def test_care_is_a_service_of_its_own() -> None:
    assert list(SPECS)[-1] == "care"
    assert parser().parse_args(["serve", "care"]).service == "care"
    assert CARE in ALL_QUEUES
    assert (CARE.name, CARE.bindings) == ("care.events", ("policy.#",))


async def test_care_serves_its_resources_from_its_own_store(care_stack: TestClient, tokens: Any) -> None:
    response = await care_stack.get("/fhir/metadata")
    resources = {r["type"]: r for r in (await response.json())["rest"][0]["resource"]}
    assert resources["CarePlan"]["versioning"] == "versioned-update"
    assert {i["code"] for i in resources["CarePlan"]["interaction"]} == {
        "create",
        "read",
        "vread",
        "update",
        "history-instance",
        "search-type",
    }
    assert {"Task", "Bundle", "Questionnaire"} <= set(resources)
    ready = await (await care_stack.get("/readyz")).json()
    assert ready["services"] == ["agreements", "audit", "care"]
    [ctx] = [c for c in care_stack.server.app[CONTEXTS] if c.name == "care"]
    assert ctx.source == "urn:lhcie:service:care"
    status, bundle, _ = await call(care_stack, tokens, "GET", "/fhir/Questionnaire", "RJ1")
    assert (status, sorted(e["resource"]["id"] for e in bundle["entry"])) == (
        200,
        ["end-of-life-care-plan", "repatriation"],
    )
    # The HTML shells are public (their data comes through the API with the user's token).
    for path in ("/care/plan/", "/care/transfers/"):
        page = await care_stack.get(path)
        assert page.status == 200 and page.content_type == "text/html"
        assert "script-src 'nonce-" in page.headers["Content-Security-Policy"]
