"""The embedded run keeps its data across a restart: documents, alerts, the audit chain, the signing key."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from shared.config import Settings
from shared.edge import build_app
from tests.helpers import PDF, document_reference, eventually


async def test_data_survives_a_restart(settings: Settings, tokens: Any) -> None:
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as first:
        response = await first.post(
            "/fhir/DocumentReference",
            json=document_reference(),
            headers={"Content-Type": "application/fhir+json", **tokens.headers()},
        )
        doc_id = (await response.json())["id"]

        async def alerted() -> bool:
            r = await first.get(
                "/fhir/Communication?recipient=CareTeam/rj1-lung",
                headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
            )
            return bool((await r.json())["entry"])

        await eventually(alerted)

        async def audited() -> int | None:
            # The document's trail is complete once its alert is on the chain (received, stored, alerted).
            r = await first.get(
                f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=tokens.headers("RJ1", "dcc-admin")
            )
            types = {e["resource"]["type"]["code"] for e in (await r.json()).get("entry", [])}
            return len(types) or None

        await eventually(audited)
        verify = await first.get("/fhir/AuditEvent/$verify", headers=tokens.headers("RJ1", "dcc-admin"))
        before = {p["name"]: p.get("valueInteger", p.get("valueBoolean")) for p in (await verify.json())["parameter"]}
        assert before["intact"] is True and before["count"] > 0

    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as second:
        # The token minted before the restart still verifies: the signing key lives in the data directory.
        binary = await second.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers())
        assert binary.status == 200 and await binary.read() == PDF
        alerts = await second.get(
            "/fhir/Communication?recipient=CareTeam/rj1-lung",
            headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
        )
        assert [e["resource"]["about"][0]["reference"] for e in (await alerts.json())["entry"]] == [
            f"DocumentReference/{doc_id}"
        ]
        verify = await second.get("/fhir/AuditEvent/$verify", headers=tokens.headers("RJ1", "dcc-admin"))
        after = {p["name"]: p.get("valueInteger", p.get("valueBoolean")) for p in (await verify.json())["parameter"]}
        # Intact and complete: an empty chain is intact too, so the records written before the restart
        # must all still be there (the restart may only add records, such as its own audit searches).
        assert after["intact"] is True
        assert after["count"] >= before["count"]
        trail = await second.get(
            f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=tokens.headers("RJ1", "dcc-admin")
        )
        assert len((await trail.json())["entry"]) >= 3
        organisations = await second.get("/fhir/Organization", headers=tokens.headers())
        assert {"RAL", "RJ1", "RPY", "RRV"} <= {e["resource"]["id"] for e in (await organisations.json())["entry"]}
