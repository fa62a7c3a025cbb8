"""The whole exchange with every service's data in MongoDB (SecantusDB here): post -> alert -> audit.

Then the database goes away: readiness fails and requests answer 503 with Retry-After rather than hang;
when it is back, so is the service. And ``lhcie store init`` prepares every service's database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from lhcie.cli import main
from shared.config import DocStoreKind, Settings
from tests.conftest import make_settings
from tests.contract.secantus import Secantus, secantus
from tests.helpers import TEST_PATIENT, eventually
from tests.unit.test_document_flow import post_document, stored


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Secantus]:
    with secantus(tmp_path / "secantus") as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database: Secantus) -> Settings:
    # Overrides the suite's ``settings``, so ``stack`` and ``tokens`` run on MongoDB.
    return make_settings(tmp_path / "data", doc_store=DocStoreKind.MONGODB, mongodb_url=SecretStr(database.url))


async def test_post_alert_and_audit_on_mongodb(stack: TestClient, tokens: Any, database: Secantus) -> None:
    ready = await stack.get("/readyz")
    assert ready.status == 200, await ready.text()

    doc_id = await post_document(stack, tokens)
    resource = await eventually(lambda: stored(stack, tokens, doc_id))
    assert (resource["id"], resource["status"]) == (doc_id, "current")

    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")

    async def alerts() -> list[dict[str, Any]]:
        response = await stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator)
        assert response.status == 200
        return (await response.json()).get("entry", [])

    [entry] = await eventually(alerts)
    alert = entry["resource"]
    assert alert["recipient"] == [{"reference": "CareTeam/rj1-lung"}]
    assert alert["about"] == [{"reference": f"DocumentReference/{doc_id}"}]
    assert alert["subject"]["identifier"]["value"] == TEST_PATIENT

    admin = tokens.headers("RJ1", "dcc-admin")

    async def trail() -> list[str] | None:
        response = await stack.get(f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin)
        codes = [e["resource"]["subtype"][1]["code"] for e in (await response.json()).get("entry", [])]
        return codes if {"document.received", "document.stored", "alert.raised"} <= set(codes) else None

    codes = await eventually(trail)
    assert codes[:2] == ["document.received", "document.stored"]
    # Comma OR and the sequence cursor compile to MongoDB's $or and $gt too (and the admin's scope, an
    # $or itself when RJ1 is party to agreements, still applies).
    first = await stack.get(f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}&_count=1", headers=admin)
    after = int((await first.json())["entry"][0]["resource"]["id"])
    both = await stack.get(
        f"/fhir/AuditEvent?entity=DocumentReference/{doc_id},DocumentReference/none"
        f"&subtype=document.stored,alert.raised&sequence=gt{after}",
        headers=admin,
    )
    assert sorted(e["resource"]["subtype"][1]["code"] for e in (await both.json())["entry"]) == [
        "alert.raised",
        "document.stored",
    ]
    verify = await stack.get("/fhir/AuditEvent/$verify", headers=admin)
    parameters = (await verify.json())["parameter"]
    assert parameters[0] == {"name": "intact", "valueBoolean": True}
    assert parameters[1]["name"] == "count" and parameters[1]["valueInteger"] >= len(codes)

    # The database goes away: not ready, and a request fails fast with 503 + Retry-After.
    database.stop()
    ready = await stack.get("/readyz")
    assert ready.status == 503
    assert ready.headers["Retry-After"] == "5"
    failing = (await ready.json())["issue"][0]["diagnostics"]
    assert all(f"{name}.store" in failing for name in ("intake", "storage", "notification", "audit", "agreements"))
    response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert (await response.json())["issue"][0]["code"] == "transient"

    # Back again: the same clients reconnect by themselves.
    database.start()

    async def is_ready() -> bool:
        return (await stack.get("/readyz")).status == 200

    await eventually(is_ready, timeout=90)
    assert await stored(stack, tokens, doc_id) == resource


async def test_store_init_creates_every_collection_and_index_and_can_run_again(
    database: Secantus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LHCIE_DOC_STORE", "mongodb")
    monkeypatch.setenv("LHCIE_MONGODB_URL", database.default_url)
    for _ in range(2):
        assert await asyncio.to_thread(main, ["store", "init"]) == 0
        assert capsys.readouterr().out == (
            "mongodb: collections and indexes ready for agreements, intake, storage, notification, audit, care\n"
        )

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database.url)
    try:
        names = await client.list_database_names()
        assert {f"lhcie_{s}" for s in ("agreements", "intake", "storage", "notification", "audit")} <= set(names)
        for service in ("agreements", "intake", "storage", "notification", "audit"):
            assert {"outbox", "inbox"} <= set(await client[f"lhcie_{service}"].list_collection_names())
        audit = await client["lhcie_audit"]["audit_records"].index_information()
        assert audit["ux_seq"] == {
            "v": 2,
            "key": [("seq", 1)],
            "unique": True,
            "partialFilterExpression": {"seq": {"$exists": True}},
        }
        assert audit["ux_event_id"]["unique"] is True
        outbox = await client["lhcie_intake"]["outbox"].index_information()
        assert outbox["ix_seq"] == {"v": 2, "key": [("seq", 1)]}
    finally:
        await client.close()

    assert await asyncio.to_thread(main, ["store", "init", "nonsense"]) == 2
    assert capsys.readouterr().err == "unknown service(s): nonsense\n"
