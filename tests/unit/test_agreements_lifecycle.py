"""The ISA lifecycle through the API: propose, each party answers, revoke, expire; templates, duplicates,
the signed PDF, and the directory (organisations and MDTs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from services.agreements.routes import AGREEMENTS
from shared.fhir.identifiers import ODS_CODE
from tests.helpers import PDF, document_reference, eventually

FHIR = {"Content-Type": "application/fhir+json"}
ERROR_SYSTEM = "https://lhcie.london/fhir/CodeSystem/error-code"
PURPOSES = "https://lhcie.london/fhir/CodeSystem/sharing-purpose"
TEMPLATE = "https://lhcie.london/fhir/StructureDefinition/template-agreement"


def contract(title: str, *parties: str, purposes: tuple[str, ...] = ("cancer-care",), **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Contract",
        "title": title,
        "authority": [{"identifier": {"system": ODS_CODE, "value": p}} for p in parties],
        "scope": {"coding": [{"system": PURPOSES, "code": p} for p in purposes]},
        **extra,
    }


def ref(org: str) -> dict[str, Any]:
    return {"reference": f"Organization/{org}", "identifier": {"system": ODS_CODE, "value": org}}


def outcome(code: str, issue_type: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": issue_type,
        "details": {"coding": [{"system": ERROR_SYSTEM, "code": code}]},
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


async def call(
    stack: TestClient, tokens: Any, method: str, path: str, org: str, body: Any = None, role: str = "dcc-admin"
) -> tuple[int, dict[str, Any]]:
    response = await stack.request(method, path, json=body, headers={**FHIR, **tokens.headers(org, role)})
    return response.status, await response.json()


async def pending_ids(stack: TestClient, tokens: Any, org: str) -> list[str]:
    status, bundle = await call(stack, tokens, "GET", "/fhir/Contract/$pending", org)
    assert status == 200
    return [e["resource"]["id"] for e in bundle["entry"]]


async def test_an_isa_is_proposed_accepted_by_the_other_party_and_revoked_by_either(
    stack: TestClient, tokens: Any
) -> None:
    status, proposed = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RRV",
        contract("UCLH and Royal Free haematology ISA", "RRV", "RAL", applies={"end": "2030-03-31T00:00:00+00:00"}),
    )
    assert status == 201
    isa = proposed["id"]
    signature_type = [
        {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.7", "display": "Consent Signature"}
    ]
    when_rrv = proposed["signer"][0]["signature"][0]["when"]
    assert proposed == {
        "resourceType": "Contract",
        "id": isa,
        "meta": {"versionId": "1"},
        "status": "offered",
        "title": "UCLH and Royal Free haematology ISA",
        "subType": [{"text": "Information Sharing Agreement"}],
        "authority": [ref("RRV"), ref("RAL")],
        "scope": {"coding": [{"system": PURPOSES, "code": "cancer-care", "display": "cancer care"}]},
        "signer": [
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/contractsignertypecodes", "code": "PARTNER"},
                "party": ref("RRV"),
                "signature": [{"type": signature_type, "when": when_rrv, "who": ref("RRV")}],
            }
        ],
        "author": ref("RRV"),
        "applies": {"end": "2030-03-31T00:00:00+00:00"},
    }
    # Pending on RAL (it has not answered), not on RRV (it signed by proposing).
    assert isa in await pending_ids(stack, tokens, "RAL")
    assert isa not in await pending_ids(stack, tokens, "RRV")
    # A third organisation cannot answer for the parties.
    status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{isa}/$accept", "RJ1")
    assert (status, body) == (403, outcome("FORBIDDEN", "forbidden", "RJ1 is not a party to this agreement."))

    status, accepted = await call(stack, tokens, "POST", f"/fhir/Contract/{isa}/$accept", "RAL")
    assert status == 200
    assert accepted["status"] == "executed"
    assert accepted["meta"] == {"versionId": "2"}
    assert [s["party"]["identifier"]["value"] for s in accepted["signer"]] == ["RRV", "RAL"]
    assert await pending_ids(stack, tokens, "RAL") == []

    status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{isa}/$accept", "RAL")
    assert (status, body) == (
        409,
        outcome("CONFLICT", "conflict", "The agreement is accepted; only a proposed agreement can be accepted."),
    )

    status, revoked = await call(stack, tokens, "POST", f"/fhir/Contract/{isa}/$revoke", "RAL")
    assert (status, revoked["status"], revoked["meta"]) == (200, "revoked", {"versionId": "3"})
    status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{isa}/$revoke", "RRV")
    assert (status, body) == (409, outcome("CONFLICT", "conflict", "The agreement is already revoked."))

    # By organisation: RAL's agreements list the revoked ISA and nothing of RJ1's.
    status, bundle = await call(stack, tokens, "GET", "/fhir/Contract?party=RAL", "RAL")
    assert [(e["resource"]["id"], e["resource"]["status"]) for e in bundle["entry"]] == [(isa, "revoked")]


async def test_a_party_may_reject_a_proposal(stack: TestClient, tokens: Any) -> None:
    _, proposed = await call(stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("GSTT and Royal Free", "RAL"))
    assert [a["identifier"]["value"] for a in proposed["authority"]] == ["RJ1", "RAL"]
    status, rejected = await call(stack, tokens, "POST", f"/fhir/Contract/{proposed['id']}/$reject", "RAL")
    assert (status, rejected["status"]) == (200, "rejected")
    status, _body = await call(stack, tokens, "POST", f"/fhir/Contract/{proposed['id']}/$accept", "RAL")
    assert status == 409


async def test_sharing_follows_the_lifecycle_across_services(stack: TestClient, tokens: Any) -> None:
    # RAL has no ISA in the demo: its document is refused to RRV until both have signed one.
    response = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(custodian="RAL", related=()),
        headers={**FHIR, **tokens.headers("RAL")},
    )
    doc_id = (await response.json())["id"]
    binary = f"/fhir/Binary/{doc_id}"

    async def retrieval_status() -> int:
        return (await stack.get(binary, headers=tokens.headers("RRV", "clinician"))).status

    await eventually(lambda: _is(retrieval_status, 403))
    _, proposed = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RAL",
        contract("Royal Free and UCLH", "RRV", purposes=("direct-care",)),
    )
    assert await retrieval_status() == 403  # proposed is not enough
    await call(stack, tokens, "POST", f"/fhir/Contract/{proposed['id']}/$accept", "RRV")
    await eventually(lambda: _is(retrieval_status, 200))
    await call(stack, tokens, "POST", f"/fhir/Contract/{proposed['id']}/$revoke", "RRV")
    await eventually(lambda: _is(retrieval_status, 403))


async def _is(probe: Any, expected: int) -> bool:
    return await probe() == expected


async def test_expiry_ends_live_agreements_past_their_end_date(stack: TestClient, tokens: Any) -> None:
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    _, proposed = await call(
        stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("Short-lived", "RAL", applies={"end": end})
    )
    service = stack.server.app[AGREEMENTS]
    assert await service.isas.expire_due(datetime.now(UTC)) == []
    assert await service.isas.expire_due(datetime.now(UTC) + timedelta(days=2)) == [proposed["id"]]
    _, read = await call(stack, tokens, "GET", f"/fhir/Contract/{proposed['id']}", "RJ1")
    assert read["status"] == "terminated"


ADMITS = "https://lhcie.london/fhir/StructureDefinition/template-admits-organisation-type"
JOIN_REQUEST = "https://lhcie.london/fhir/StructureDefinition/join-request"


def join_requests(contract_: dict[str, Any]) -> list[str]:
    return [
        next(x["valueReference"]["identifier"]["value"] for x in e["extension"] if x["url"] == "organization")
        for e in contract_.get("extension", [])
        if e["url"] == JOIN_REQUEST
    ]


def decision(org: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "organization", "valueReference": ref(org)}]}


async def test_joining_a_template_waits_for_its_owner_and_grants_nothing_until_approved(
    stack: TestClient, tokens: Any
) -> None:
    status, template = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RJ1",
        contract(
            "London standard direct care ISA",
            purposes=("direct-care",),
            extension=[{"url": TEMPLATE, "valueBoolean": True}],
        ),
    )
    assert (status, template["status"], template["extension"]) == (
        201,
        "executed",
        [{"url": TEMPLATE, "valueBoolean": True}],
    )
    tid = template["id"]
    status, asked = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$join", "RAL")
    assert (status, [a["identifier"]["value"] for a in asked["authority"]], join_requests(asked)) == (
        202,
        ["RJ1"],
        ["RAL"],
    )
    status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$join", "RAL")
    assert (status, body) == (409, outcome("CONFLICT", "conflict", "RAL has already asked to join this agreement."))
    # The owner sees it waiting, and the change is announced (so audited) as policy.agreement.updated.
    assert tid in await pending_ids(stack, tokens, "RJ1")
    assert tid not in await pending_ids(stack, tokens, "RAL")

    async def announced() -> bool:
        r = await stack.get(
            f"/fhir/AuditEvent?entity=Contract/{tid}&subtype=policy.agreement.updated&agent=RAL",
            headers=tokens.headers("RJ1", "dcc-admin"),
        )
        return len((await r.json())["entry"]) == 1

    await eventually(announced)
    # Until approved, RAL sees nothing of RJ1's.
    posted = await stack.post(
        "/fhir/DocumentReference", json=document_reference(related=()), headers={**FHIR, **tokens.headers("RJ1")}
    )
    doc_id = (await posted.json())["id"]
    await eventually(lambda: _status(stack, f"/fhir/Binary/{doc_id}", tokens.headers("RJ1", "clinician"), 200))
    assert (await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RAL", "clinician"))).status == 403
    # Only the owner decides.
    for org in ("RAL", "RRV"):
        status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$approve-join", org, decision("RAL"))
        assert (status, body) == (
            403,
            outcome("FORBIDDEN", "forbidden", "Only RJ1, which owns this template, approves who joins it."),
        ), org
    status, approved = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$approve-join", "RJ1", decision("RAL"))
    assert (status, [a["identifier"]["value"] for a in approved["authority"]], join_requests(approved)) == (
        200,
        ["RJ1", "RAL"],
        [],
    )
    assert tid not in await pending_ids(stack, tokens, "RJ1")
    await eventually(lambda: _status(stack, f"/fhir/Binary/{doc_id}", tokens.headers("RAL", "clinician"), 200))
    # A refused request leaves the signatories as they were.
    await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$join", "RRV")
    status, rejected = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$reject-join", "RJ1", decision("RRV"))
    assert (status, [a["identifier"]["value"] for a in rejected["authority"]], join_requests(rejected)) == (
        200,
        ["RJ1", "RAL"],
        [],
    )
    status, body = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$approve-join", "RJ1", decision("RRV"))
    assert (status, body) == (409, outcome("CONFLICT", "conflict", "RRV has not asked to join this agreement."))
    _, bundle = await call(stack, tokens, "GET", "/fhir/Contract/$templates", "RPY")
    assert [e["resource"]["id"] for e in bundle["entry"]] == [tid]
    # A signatory other than the owner leaves; the template stays in force for the rest.
    status, left = await call(stack, tokens, "POST", f"/fhir/Contract/{tid}/$revoke", "RAL")
    assert (status, left["status"], [a["identifier"]["value"] for a in left["authority"]]) == (200, "executed", ["RJ1"])


async def test_a_template_that_admits_a_type_of_organisation_is_joined_at_once_by_one(
    stack: TestClient, tokens: Any
) -> None:
    admits = [{"url": TEMPLATE, "valueBoolean": True}, {"url": ADMITS, "valueCode": "acute-trust"}]
    status, template = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RJ1",
        contract("Acute trusts' standard ISA", purposes=("direct-care",), extension=admits),
    )
    assert (status, template["extension"]) == (201, admits)
    status, joined = await call(stack, tokens, "POST", f"/fhir/Contract/{template['id']}/$join", "RRV")
    assert (status, [a["identifier"]["value"] for a in joined["authority"]]) == (200, ["RJ1", "RRV"])
    # Any other type of organisation still asks.
    status, _ = await call(
        stack, tokens, "POST", "/fhir/Organization", "RJ1", organization("G85001", "Borough GP practice")
    )
    assert status == 201
    status, asked = await call(stack, tokens, "POST", f"/fhir/Contract/{template['id']}/$join", "G85001")
    assert (status, join_requests(asked)) == (202, ["G85001"])
    status, _body = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RJ1",
        contract(
            "Bad",
            purposes=("direct-care",),
            extension=[{"url": TEMPLATE, "valueBoolean": True}, {"url": ADMITS, "valueCode": "pub"}],
        ),
    )
    assert status == 422


async def _status(stack: TestClient, path: str, headers: dict[str, str], wanted: int) -> bool:
    return (await stack.get(path, headers=headers)).status == wanted


async def test_duplicates_are_found_and_one_retired(stack: TestClient, tokens: Any) -> None:
    # A second RJ1-RRV ISA for cancer care duplicates the demo's direct-care ISA between them.
    _, second = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RJ1",
        contract("GSTT-UCLH cancer ISA", "RRV", applies={"end": "2028-01-01T00:00:00+00:00"}),
    )
    await call(stack, tokens, "POST", f"/fhir/Contract/{second['id']}/$accept", "RRV")
    status, found = await call(stack, tokens, "GET", "/fhir/Contract/$duplicates", "RRV")
    overlaps = [
        [p["valueReference"]["reference"] for p in o["part"] if p["name"] == "agreement"] for o in found["parameter"]
    ]
    assert ["Contract/isa-rj1-rrv", f"Contract/{second['id']}"] in [
        sorted(o, key=lambda r: r != "Contract/isa-rj1-rrv") for o in overlaps
    ]
    # The narrower one cannot replace the broader ...
    status, body = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract/isa-rj1-rrv/$retire",
        "RJ1",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "replacedBy", "valueReference": {"reference": f"Contract/{second['id']}"}}],
        },
    )
    assert (status, body) == (
        422,
        outcome(
            "BUSINESS_RULE",
            "business-rule",
            f"{second['id']} does not cover purposes direct-care, end-of-life-care, transfer-of-care, its later end date "
            "of isa-rj1-rrv; propose a merged ISA instead.",
        ),
    )
    # ... but the broader one replaces the narrower.
    status, retired = await call(
        stack,
        tokens,
        "POST",
        f"/fhir/Contract/{second['id']}/$retire",
        "RRV",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "replacedBy", "valueReference": {"reference": "Contract/isa-rj1-rrv"}}],
        },
    )
    assert (status, retired["status"], retired["instantiatesUri"]) == (200, "revoked", "Contract/isa-rj1-rrv")
    _, found = await call(stack, tokens, "GET", "/fhir/Contract/$duplicates", "RRV")
    assert found == {"resourceType": "Parameters", "parameter": []}


async def test_merging_proposes_one_isa_that_retires_the_others_once_accepted(stack: TestClient, tokens: Any) -> None:
    _, extra = await call(stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("GSTT-UCLH imaging", "RRV"))
    status, merged = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract/$merge",
        "RJ1",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "agreement", "valueReference": {"reference": "Contract/isa-rj1-rrv"}},
                {"name": "agreement", "valueReference": {"reference": f"Contract/{extra['id']}"}},
                {"name": "title", "valueString": "GSTT-UCLH consolidated ISA"},
            ],
        },
    )
    assert (status, merged["status"], merged["title"]) == (201, "offered", "GSTT-UCLH consolidated ISA")
    assert merged["relevantHistory"] == [
        {"display": "supersedes Contract/isa-rj1-rrv"},
        {"display": f"supersedes Contract/{extra['id']}"},
    ]
    await call(stack, tokens, "POST", f"/fhir/Contract/{merged['id']}/$accept", "RRV")
    for old in ("isa-rj1-rrv", extra["id"]):
        _, read = await call(stack, tokens, "GET", f"/fhir/Contract/{old}", "RJ1")
        assert (read["status"], read["instantiatesUri"]) == ("revoked", f"Contract/{merged['id']}")


async def test_the_signed_agreement_pdf_is_kept_in_the_object_store(stack: TestClient, tokens: Any) -> None:
    _, proposed = await call(stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("With paperwork", "RAL"))
    path = f"/fhir/Contract/{proposed['id']}/$document"
    response = await stack.put(
        path, data=b"not a pdf", headers={"Content-Type": "application/pdf", **tokens.headers("RJ1", "dcc-admin")}
    )
    assert (response.status, await response.json()) == (
        415,
        outcome("UNSUPPORTED_MEDIA_TYPE", "not-supported", "The signed agreement must be a PDF."),
    )
    response = await stack.put(
        path, data=PDF, headers={"Content-Type": "application/pdf", **tokens.headers("RJ1", "dcc-admin")}
    )
    assert response.status == 200
    attachment = (await response.json())["legallyBindingAttachment"]
    # Who attached the copy it holds, and when (a countersigned copy replaces the proposer's).
    assert attachment.pop("extension")[0]["valueReference"]["identifier"]["value"] == "RJ1"
    assert attachment.pop("creation")
    assert attachment == {"contentType": "application/pdf", "url": path, "size": len(PDF), "title": "Signed agreement"}
    response = await stack.get(path, headers=tokens.headers("RAL", "dcc-admin"))
    assert (response.status, response.content_type, await response.read()) == (200, "application/pdf", PDF)
    objects = stack.server.app[AGREEMENTS].isas.objects
    assert await objects.read_all(f"agreements/{proposed['id']}/signed-agreement.pdf") == PDF


async def test_an_isa_with_bad_fields_is_refused_field_by_field(stack: TestClient, tokens: Any) -> None:
    status, body = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Contract",
        "RJ1",
        {
            "resourceType": "Contract",
            "authority": [{"display": "somebody"}],
            "scope": {"coding": [{"code": "research"}]},
            "applies": {"start": "2027-01-01T00:00:00+00:00", "end": "2026-01-01T00:00:00+00:00"},
        },
    )
    assert status == 422
    assert [(i["diagnostics"], i["expression"]) for i in body["issue"]] == [
        ("title is required", ["Contract.title"]),
        ("each authority must carry an ODS code identifier", ["Contract.authority[0]"]),
        (
            "scope.coding must list purposes from direct-care, cancer-care, end-of-life-care, transfer-of-care",
            ["Contract.scope"],
        ),
        ("applies.end must be after applies.start", ["Contract.applies"]),
    ]
    status, body = await call(stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("Unknown party", "XYZ99"))
    assert (status, body) == (
        422,
        outcome("BUSINESS_RULE", "business-rule", "XYZ99 is not a registered active organisation."),
    )
    status, body = await call(
        stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("As a system", "RAL"), role="system"
    )
    assert (status, body) == (403, outcome("FORBIDDEN", "forbidden", "the token's scopes do not allow 'c' on Contract"))


def organization(ods: str, name: str, kind: str = "gp-practice") -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ODS_CODE, "value": ods}],
        "name": name,
        "type": [{"coding": [{"system": "https://lhcie.london/fhir/CodeSystem/organisation-type", "code": kind}]}],
        "contact": [
            {"purpose": {"text": "Data controller"}, "telecom": [{"system": "email", "value": "dpo@example.nhs.uk"}]}
        ],
    }


async def test_organisations_and_mdts_are_registered_and_updated(stack: TestClient, tokens: Any) -> None:
    status, created = await call(
        stack, tokens, "POST", "/fhir/Organization", "RJ1", organization("F84003", "Lower Clapton Group Practice")
    )
    assert (status, created) == (
        201,
        {
            "resourceType": "Organization",
            "id": "F84003",
            "meta": {"versionId": "1"},
            "identifier": [{"system": ODS_CODE, "value": "F84003"}],
            "active": True,
            "type": [
                {
                    "coding": [
                        {"system": "https://lhcie.london/fhir/CodeSystem/organisation-type", "code": "gp-practice"}
                    ]
                }
            ],
            "name": "Lower Clapton Group Practice",
            "contact": [
                {
                    "purpose": {"text": "Data controller"},
                    "telecom": [{"system": "email", "value": "dpo@example.nhs.uk"}],
                }
            ],
        },
    )
    status, body = await call(stack, tokens, "POST", "/fhir/Organization", "RJ1", organization("F84003", "Again"))
    assert (status, body) == (409, outcome("CONFLICT", "conflict", "F84003 is already registered; update it with PUT."))
    status, body = await call(
        stack, tokens, "PUT", "/fhir/Organization/F84003", "RJ1", organization("F84003", "Renamed")
    )
    assert (status, body) == (403, outcome("FORBIDDEN", "forbidden", "A RJ1 administrator may only update RJ1."))
    status, updated = await call(
        stack, tokens, "PUT", "/fhir/Organization/F84003", "F84003", organization("F84003", "Lower Clapton Practice")
    )
    assert (status, updated["name"], updated["meta"]) == (200, "Lower Clapton Practice", {"versionId": "2"})
    status, body = await call(
        stack,
        tokens,
        "POST",
        "/fhir/Organization",
        "RJ1",
        {"resourceType": "Organization", "identifier": [], "type": []},
    )
    assert status == 422
    assert [i["expression"] for i in body["issue"]] == [
        ["Organization.identifier"],
        ["Organization.name"],
        ["Organization.type"],
    ]

    team = {
        "resourceType": "CareTeam",
        "id": "f84003-palliative",
        "name": "Palliative care team",
        "managingOrganization": [{"identifier": {"system": ODS_CODE, "value": "F84003"}}],
        "participant": [{"member": {"display": "coordinator@F84003"}}],
    }
    status, body = await call(stack, tokens, "POST", "/fhir/CareTeam", "RJ1", team)
    assert (status, body) == (
        403,
        outcome("FORBIDDEN", "forbidden", "A RJ1 administrator may only manage RJ1's teams."),
    )
    status, created = await call(stack, tokens, "POST", "/fhir/CareTeam", "F84003", team)
    assert (status, created) == (
        201,
        {
            "resourceType": "CareTeam",
            "id": "f84003-palliative",
            "meta": {"versionId": "1"},
            "status": "active",
            "name": "Palliative care team",
            "managingOrganization": [ref("F84003")],
            "participant": [{"role": [{"text": "MDT coordinator"}], "member": {"display": "coordinator@F84003"}}],
        },
    )
    status, updated = await call(
        stack, tokens, "PUT", "/fhir/CareTeam/f84003-palliative", "F84003", {**team, "status": "inactive"}
    )
    assert (status, updated["status"]) == (200, "inactive")
    # The change reached the other services' policy views (notification resolves alert recipients by it).
    notification = stack.server.app
    from services.notification.routes import NOTIFICATION

    async def seen() -> bool:
        found = await notification[NOTIFICATION].policy.careteam("f84003-palliative")
        return found is not None and not found.active

    await eventually(seen)


async def audit_of(stack: TestClient, tokens: Any, entity: str, wanted: dict[str, int]) -> list[dict[str, Any]]:
    """The audit records about ``entity`` once there are as many of each event type as ``wanted`` says."""

    async def found() -> list[dict[str, Any]] | None:
        response = await stack.get(
            f"/fhir/AuditEvent?entity={entity}&_count=200", headers=tokens.headers("LHCIE", "exchange-operator")
        )
        records = [e["resource"] for e in (await response.json())["entry"]]
        codes = [r["subtype"][1]["code"] for r in records]
        return records if all(codes.count(code) >= n for code, n in wanted.items()) else None

    return await eventually(found)


async def test_only_the_parties_and_the_operator_download_the_signed_agreement_and_each_download_is_audited(
    stack: TestClient, tokens: Any
) -> None:
    _, proposed = await call(stack, tokens, "POST", "/fhir/Contract", "RJ1", contract("With paperwork", "RAL"))
    path = f"/fhir/Contract/{proposed['id']}/$document"
    response = await stack.put(
        path, data=PDF, headers={"Content-Type": "application/pdf", **tokens.headers("RJ1", "dcc-admin")}
    )
    assert response.status == 200
    for org, role in (("RRV", "dcc-admin"), ("RPY", "system")):
        response = await stack.get(path, headers=tokens.headers(org, role))
        assert response.status == 403, (org, role)
        assert await response.json() == outcome(
            "FORBIDDEN",
            "forbidden",
            "Only the parties to this agreement and the exchange operator may download its signed document.",
        )
    for org, role in (("RAL", "dcc-admin"), ("LHCIE", "exchange-operator")):
        response = await stack.get(path, headers={**tokens.headers(org, role), "X-Request-Id": f"download-{org}"})
        assert (response.status, await response.read()) == (200, PDF), org

    records = await audit_of(stack, tokens, f"Contract/{proposed['id']}", {"record.read": 2, "access.denied": 2})
    reads = [r for r in records if r["subtype"][1]["code"] == "record.read"]
    readers = sorted(next(a["who"]["identifier"]["value"] for a in r["agent"] if a["requestor"]) for r in reads)
    assert readers == ["dcc-admin@RAL", "exchange-operator@LHCIE"]
    assert all((r["action"], r["subtype"][0]["code"], r["outcome"]) == ("R", "read", "0") for r in reads)
    refused = [r for r in records if r["subtype"][1]["code"] == "access.denied"]
    assert sorted(next(a["who"]["identifier"]["value"] for a in r["agent"] if a["requestor"]) for r in refused) == [
        "dcc-admin@RRV",
        "system@RPY",
    ]
    # Each party sees the downloads of its own agreement.
    response = await stack.get(
        f"/fhir/AuditEvent?entity=Contract/{proposed['id']}&subtype=record.read",
        headers=tokens.headers("RJ1", "auditor"),
    )
    assert len((await response.json())["entry"]) == 2


async def test_duplicates_are_answered_for_ones_own_organisation_or_to_the_operator(
    stack: TestClient, tokens: Any
) -> None:
    status, body = await call(stack, tokens, "GET", "/fhir/Contract/$duplicates?party=RJ1", "RAL")
    assert (status, body) == (
        403,
        outcome(
            "FORBIDDEN", "forbidden", "Only RJ1 itself and the exchange operator may list RJ1's duplicate agreements."
        ),
    )
    for org, role in (("RJ1", "dcc-admin"), ("LHCIE", "exchange-operator")):
        status, body = await call(stack, tokens, "GET", "/fhir/Contract/$duplicates?party=RJ1", org, role=role)
        assert (status, body["resourceType"]) == (200, "Parameters"), org
    status, _ = await call(stack, tokens, "GET", "/fhir/Contract/$duplicates", "LHCIE", role="exchange-operator")
    assert status == 200
    records = await audit_of(stack, tokens, "Organization/RJ1", {"access.denied": 1})
    [denied] = [r for r in records if r["subtype"][1]["code"] == "access.denied"]
    assert next(a["who"]["identifier"]["value"] for a in denied["agent"] if a["requestor"]) == "dcc-admin@RAL"
