"""ITI-67 as a stock MHD Document Consumer uses it: every Responder parameter, FHIR's date-range semantics,
lenient unknown parameters, silent page caps, totals, and absolute URLs built from the configured base."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from lhcie.services import SPECS
from shared.edge import build_app
from shared.fhir.identifiers import NHS_NUMBER
from tests.conftest import Tokens, make_settings
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually

# Every FHIR answer these tests read is checked by an independent R4 validator (tests/fhir_validation.py).
pytestmark = pytest.mark.usefixtures("validated_answers")

FHIR = {"Content-Type": "application/fhir+json"}
BY_REFERENCE = f"/fhir/DocumentReference?patient=Patient/{TEST_PATIENT}"
EVENT = "http://snomed.info/sct|363346000"


def practitioner(given: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": "author", "name": [{"given": [given], "family": family}]}


def documents() -> list[dict[str, Any]]:
    a = document_reference()
    a["contained"] = [practitioner("Joan", "Smith")]
    a["author"] = [{"reference": "#author"}]
    a["context"]["period"] = {"start": "2026-02-10", "end": "2026-03-10"}
    a["context"]["event"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "363346000"}]}]
    a["context"]["related"].append({"identifier": {"system": "urn:oid:1.2.3", "value": "ACC-1"}})
    a["securityLabel"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}
    ]
    a["date"] = "2026-03-01T09:00:00Z"
    b = document_reference(type_code="57133-1")
    b["contained"] = [practitioner("John", "Smythe")]
    b["author"] = [{"reference": "#author"}]
    b["context"]["period"] = {"start": "2026-03-20T08:00:00+00:00"}  # still open
    b["date"] = "2026-03-21T10:00:00Z"
    c = document_reference()
    c["date"] = "2026-01-15T12:00:00Z"
    return [a, b, c]


async def post_all(client: TestClient, tokens: Tokens) -> list[str]:
    ids = []
    for resource in documents():
        response = await client.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
        assert response.status == 202, await response.text()
        ids.append((await response.json())["id"])
    for doc_id in ids:

        async def stored(doc_id: str = doc_id) -> bool | None:
            response = await client.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
            return True if response.status == 200 else None

        await eventually(stored)
    return ids


async def get(client: TestClient, tokens: Tokens, query: str, **headers: str) -> dict[str, Any]:
    response = await client.get(BY_REFERENCE + query, headers={**tokens.headers(), **headers})
    assert response.status == 200, await response.text()
    return await response.json()


def found(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"}


async def test_every_mhd_responder_parameter(stack: TestClient, tokens: Tokens) -> None:
    a, b, c = await post_all(stack, tokens)
    everything = await get(stack, tokens, "")
    assert found(everything) == {a, b, c} and everything["total"] == 3
    same = await stack.get(
        f"/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}", headers=tokens.headers()
    )
    assert found(await same.json()) == {a, b, c}

    expected = {
        # A Period overlapping the date is found, not only one starting after it.
        "&period=ge2026-03-01": {a, b},
        "&period=ge2026-03-01&period=le2026-03-15": {a},
        "&period=2026-03": set(),  # eq: no period lies wholly inside March
        "&period=sa2026-03-10": {b},
        "&period=ge2027-01-01": {b},  # open-ended: it runs on
        "&date=ge2026-02-01&date=lt2026-03-21": {a},
        "&date=2026-01": {c},
        "&author.given=jo": {a, b},
        "&author.given=JOAN": {a},
        "&author.family=smi": {a},
        "&author.family=sm&author.given=john": {b},
        f"&event={EVENT}": {a},
        "&event=363346000,999": {a},
        "&security-label=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N": {a},
        f"&_id={a},{c}": {a, c},
        "&related:identifier=urn:oid:1.2.3|ACC-1": {a},
        "&related=CareTeam/rj1-lung&type=57133-1": {b},
        "&status=http://hl7.org/fhir/document-reference-status|current": {a, b, c},
        "&status=superseded": set(),
    }
    answers = {query: found(await get(stack, tokens, query)) for query in expected}
    assert answers == expected

    before = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert found(await get(stack, tokens, f"&_lastUpdated=ge{before}")) == {a, b, c}
    assert found(await get(stack, tokens, f"&_lastUpdated=lt{before}")) == set()

    withdrawn = await stack.patch(
        f"/fhir/DocumentReference/{c}",
        headers={**tokens.headers(), "Content-Type": "application/json-patch+json"},
        json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
    )
    assert withdrawn.status == 200
    assert found(await get(stack, tokens, "&status=current,entered-in-error")) == {a, b, c}
    assert found(await get(stack, tokens, "&status=entered-in-error")) == {c}


async def test_bad_values_are_400_with_the_parameter_named(stack: TestClient, tokens: Tokens) -> None:
    for query, where in (
        ("&period=ge2026-13-01", "period"),
        ("&status=final", "status"),
        ("&_count=two", "_count"),
        ("&_offset=-1", "_offset"),
    ):
        response = await stack.get(BY_REFERENCE + query, headers=tokens.headers())
        assert response.status == 400, query
        assert (await response.json())["issue"][0]["expression"] == [where], query
    for query in (
        "/fhir/DocumentReference?patient=Patient/123",
        "/fhir/DocumentReference?patient=Practitioner/9000000009",
        "/fhir/DocumentReference?type=11526-1",
    ):
        assert (await stack.get(query, headers=tokens.headers())).status == 400, query


async def test_unknown_parameters_are_ignored_and_said_so_unless_strict(stack: TestClient, tokens: Tokens) -> None:
    _a, b, _c = await post_all(stack, tokens)
    bundle = await get(stack, tokens, "&colour=blue&type=57133-1&_sort=-date")
    assert found(bundle) == {b}
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert dict(parse_qsl(urlsplit(self_link).query)) == {
        "patient": f"Patient/{TEST_PATIENT}",
        "type": "57133-1",
        "_count": "50",
        "_offset": "0",
    }
    outcome = bundle["entry"][-1]
    assert outcome["search"] == {"mode": "outcome"}
    assert outcome["resource"] == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "warning",
                "code": "processing",
                "details": {
                    "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "PROCESSING"}]
                },
                "diagnostics": "Search parameter(s) ignored: _sort, colour.",
            }
        ],
    }

    strict = await stack.get(BY_REFERENCE + "&colour=blue", headers={**tokens.headers(), "Prefer": "handling=strict"})
    assert strict.status == 400
    assert (await strict.json())["issue"][0]["diagnostics"] == "Unsupported search parameter(s): colour."


async def test_page_size_is_capped_and_counts_are_answered(stack: TestClient, tokens: Tokens) -> None:
    ids = set(await post_all(stack, tokens))
    capped = await get(stack, tokens, "&_count=5000")
    assert found(capped) == ids
    assert "_count=200" in capped["link"][0]["url"]
    for query in ("&_count=0", "&_summary=count"):
        counted = await get(stack, tokens, query)
        assert (counted["total"], counted["entry"]) == (3, []), query
    first = await get(stack, tokens, "&_count=2")
    assert (first["total"], len(first["entry"])) == (3, 2)
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    rest = await (await stack.get(URL(next_url).path_qs, headers=tokens.headers())).json()
    assert found(first) | found(rest) == ids and rest["total"] == 3
    assert not any(link["relation"] == "next" for link in rest["link"])


async def test_total_counts_only_what_the_caller_may_see(stack: TestClient, tokens: Tokens) -> None:
    await post_all(stack, tokens)
    # RRV holds an ISA with RJ1 for some categories only (the demo agreements); whatever it sees, the
    # total and the pages agree, and nothing hidden is counted.
    seen = await get(stack, tokens, "")
    other = await stack.get(BY_REFERENCE + "&_count=1", headers=tokens.headers("RRV"))
    bundle = await other.json()
    counted = await stack.get(BY_REFERENCE + "&_summary=count", headers=tokens.headers("RRV"))
    assert (await counted.json())["total"] == bundle["total"] <= seen["total"]
    everything = await stack.get(BY_REFERENCE + "&_count=200", headers=tokens.headers("RRV"))
    assert len((await everything.json())["entry"]) == bundle["total"]
    stranger = await stack.get(BY_REFERENCE + "&_summary=count", headers=tokens.headers("Y02"))
    assert stranger.status in (200, 403)
    if stranger.status == 200:
        assert (await stranger.json())["total"] == 0


# --- absolute URLs ----------------------------------------------------------------------------------


async def serve(tmp_path: Any, **overrides: Any) -> AsyncIterator[tuple[TestClient, Tokens]]:
    settings = make_settings(tmp_path / "data", **overrides)
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as client:
        yield client, Tokens(settings)


@pytest.fixture
async def public(tmp_path: Any) -> AsyncIterator[tuple[TestClient, Tokens]]:
    async for pair in serve(tmp_path, public_base_url="https://exchange.example.nhs.uk/api/"):
        yield pair


async def test_every_url_a_client_follows_is_absolute_on_the_public_base(public: tuple[TestClient, Tokens]) -> None:
    client, tokens = public
    base = "https://exchange.example.nhs.uk/api"
    resource = documents()[2]
    created = await client.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
    doc_id = (await created.json())["id"]
    assert created.headers["Location"] == f"{base}/fhir/DocumentReference/{doc_id}"
    assert (await created.json())["content"][0]["attachment"]["url"] == f"{base}/fhir/Binary/{doc_id}"

    async def read() -> dict[str, Any] | None:
        response = await client.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
        return await response.json() if response.status == 200 else None

    assert (await eventually(read))["content"][0]["attachment"]["url"] == f"{base}/fhir/Binary/{doc_id}"
    bundle = await (
        await client.get(BY_REFERENCE, headers={**tokens.headers(), "X-Forwarded-Host": "evil.example"})
    ).json()
    assert bundle["entry"][0]["fullUrl"] == f"{base}/fhir/DocumentReference/{doc_id}"
    assert bundle["entry"][0]["resource"]["content"][0]["attachment"]["url"] == f"{base}/fhir/Binary/{doc_id}"
    assert all(link["url"].startswith(f"{base}/fhir/DocumentReference?") for link in bundle["link"])


@pytest.mark.parametrize("trusted", [[], ["127.0.0.0/8"]])
async def test_forwarded_headers_count_only_from_a_trusted_proxy(tmp_path: Any, trusted: list[str]) -> None:
    async for client, tokens in serve(tmp_path, trusted_proxies=trusted):
        forwarded = {"X-Forwarded-Host": "exchange.example.nhs.uk", "X-Forwarded-Proto": "https"}
        bundle = await (await client.get(BY_REFERENCE, headers={**tokens.headers(), **forwarded})).json()
        expected = "https://exchange.example.nhs.uk" if trusted else f"http://{client.host}:{client.port}"
        assert bundle["link"][0]["url"].startswith(f"{expected}/fhir/DocumentReference?")


async def test_the_capability_statement_tells_the_truth_about_intake(stack: TestClient) -> None:
    statement = await (await stack.get("/fhir/metadata")).json()
    assert statement["format"] == ["application/fhir+json", "application/fhir+xml"]
    assert set(statement["instantiates"]) == {
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient",
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
    }
    assert {"code": "transaction"} in statement["rest"][0]["interaction"]
    [documents] = [r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference"]
    assert "profile" not in documents
    types = {p["name"]: p["type"] for p in documents["searchParam"]}
    assert {
        name: types[name]
        for name in (
            "date",
            "period",
            "creation",
            "_lastUpdated",
            "author",
            "related",
            "patient",
            "author.given",
            "type",
        )
    } == {
        "date": "date",
        "period": "date",
        "creation": "date",
        "_lastUpdated": "date",
        "author": "reference",
        "related": "reference",
        "patient": "reference",
        "author.given": "string",
        "type": "token",
    }
    assert {i["code"] for i in documents["interaction"]} >= {"read", "vread", "history-instance", "search-type"}


async def test_the_accepted_types_are_a_value_set_the_refusal_names(stack: TestClient, tokens: Tokens) -> None:
    refused = await stack.post(
        "/fhir/DocumentReference", json=document_reference(type_code="99999-9"), headers={**FHIR, **tokens.headers()}
    )
    assert refused.status == 422
    issue = next(i for i in (await refused.json())["issue"] if i["expression"] == ["DocumentReference.type"])
    assert "ValueSet/lhcie-document-types" in issue["diagnostics"]
    value_set = await (await stack.get("/fhir/ValueSet/lhcie-document-types")).json()
    assert value_set["resourceType"] == "ValueSet" and value_set["status"] == "active"
    codes = {(i["system"], c["code"]) for i in value_set["compose"]["include"] for c in i["concept"]}
    assert ("http://loinc.org", "11526-1") in codes and ("http://loinc.org", "99999-9") not in codes
    assert (await stack.get("/fhir/ValueSet/other", headers=tokens.headers())).status == 404
