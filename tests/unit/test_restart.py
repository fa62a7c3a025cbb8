"""The embedded run keeps its data across a restart: documents, alerts, the audit chain, the signing key."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from shared.config import Settings
from shared.http import build_app
from tests.helpers import PDF, document_reference, eventually


async def test_data_survives_a_restart(settings: Settings, tokens: Any) -> None:
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as first:
        response = await first.post("/fhir/DocumentReference", json=document_reference(),
                                    headers={"Content-Type": "application/fhir+json", **tokens.headers()})
        doc_id = (await response.json())["id"]

        async def alerted() -> bool:
            r = await first.get("/fhir/Communication?recipient=CareTeam/rj1-lung",
                                headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"))
            return bool((await r.json())["entry"])

        await eventually(alerted)

    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as second:
        # The token minted before the restart still verifies: the signing key lives in the data directory.
        binary = await second.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers())
        assert binary.status == 200 and await binary.read() == PDF
        alerts = await second.get("/fhir/Communication?recipient=CareTeam/rj1-lung",
                                  headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"))
        assert [e["resource"]["about"][0]["reference"] for e in (await alerts.json())["entry"]] == [
            f"DocumentReference/{doc_id}"]
        verify = await second.get("/fhir/AuditEvent/$verify", headers=tokens.headers("RJ1", "dcc-admin"))
        params = (await verify.json())["parameter"]
        assert params[0] == {"name": "intact", "valueBoolean": True}
        organisations = await second.get("/fhir/Organization", headers=tokens.headers())
        assert {"RAL", "RJ1", "RPY", "RRV"} <= {e["resource"]["id"] for e in (await organisations.json())["entry"]}
