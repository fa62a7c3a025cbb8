"""MHD's intendedRecipient (ITI TF-2 3.65.4.1.3, issue 16): each recipient an ITI-65 SubmissionSet or
DocumentReference names that the exchange can resolve and the sharing policy admits is alerted once, in
its organisation's feed (or its MDT's); each other one gets MHD's warning code in the transaction-response,
without the reason. Every FHIR answer read here goes through the independent R4 validator."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.intake.recipients import UNAVAILABLE, UNKNOWN, resolve
from services.intake.routes import INTAKE
from shared.config import Settings
from shared.fhir.identifiers import ODS_CODE
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import document_reference, eventually, settled
from tests.unit.test_intake_mhd import provide_bundle
from tests.unit.test_notification_alerts import entries

pytestmark = pytest.mark.usefixtures("validated_answers")

FHIR = {"Content-Type": "application/fhir+json"}
INTENDED = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-intendedRecipient"


def recipient(reference: dict[str, Any]) -> dict[str, Any]:
    return {"url": INTENDED, "valueReference": reference}


async def feed(stack: TestClient, tokens: Any, recipient_ref: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The recipient's alerts about documents (an organisation's feed also holds its repatriation alerts)."""
    response = await stack.get(f"/fhir/Communication?recipient={recipient_ref}", headers=headers)
    assert response.status == 200, await response.text()
    return [a for a in entries(await response.json()) if a["about"][0]["reference"].startswith("DocumentReference/")]


async def policy_known(stack: TestClient) -> None:
    """Intake's copy of the sharing policy has the demo organisations, MDTs and ISAs."""
    policy = stack.server.app[INTAKE].policy

    async def known() -> bool:
        return bool(
            await policy.organisation("RAL")
            and await policy.careteam("rpy-breast")
            and await policy.agreements_between("RJ1", "RRV")
            and await policy.agreements_between("RJ1", "RPY")
        )

    await eventually(known)


async def test_admitted_recipients_are_alerted_once_and_the_others_are_warned(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    await policy_known(stack)
    bundle = provide_bundle(document_reference(related=()))
    submission_set = bundle["entry"][0]["resource"]
    submission_set["contained"] = [
        {"resourceType": "Practitioner", "id": "dr-ral", "name": [{"family": "Moss"}]},
        {
            "resourceType": "PractitionerRole",
            "id": "dr-ral-role",
            "practitioner": {"reference": "#dr-ral"},
            "organization": {"identifier": {"system": ODS_CODE, "value": "RAL"}},
        },
    ]
    submission_set["extension"] = [
        recipient({"type": "Organization", "identifier": {"system": ODS_CODE, "value": "RRV"}}),  # ISA with RJ1
        recipient({"reference": "CareTeam/rpy-breast"}),  # an MDT of RPY, ISA with RJ1
        recipient({"reference": "#dr-ral"}),  # RAL, a known trust with no ISA: refused
        recipient({"reference": "Practitioner/nobody"}),  # cannot be resolved to an organisation
        recipient({"reference": "Organization/XYZ99"}),  # not an organisation of the exchange
        recipient({"reference": "CareTeam/rrv-haematology"}),  # RRV again, through its MDT
    ]

    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})

    assert response.status == 200, await response.text()
    answer = await response.json()
    document = answer["entry"][1]["response"]["location"]
    issues = answer["entry"][0]["response"]["outcome"]["issue"]
    warned = [(i["severity"], i["diagnostics"].split(":")[0], i["expression"]) for i in issues]
    assert warned == [
        ("warning", "UnavailableRecipient", ["Bundle.entry[0].resource.extension[2]"]),
        ("warning", "UnknownRecipient", ["Bundle.entry[0].resource.extension[3]"]),
        ("warning", "UnknownRecipient", ["Bundle.entry[0].resource.extension[4]"]),
    ]
    # Why a recipient is refused (no ISA, or the patient's own opt-out) is not the source's to learn.
    assert {i["diagnostics"] for i in issues} == {UNKNOWN, UNAVAILABLE}
    assert not any(word in UNAVAILABLE.lower() for word in ("isa", "agreement", "opt", "preference", "policy"))

    rrv = tokens.headers("RRV", "bed-manager")
    breast = tokens.headers("RPY", "mdt-coordinator", mdt="rpy-breast")
    haematology = tokens.headers("RRV", "mdt-coordinator", mdt="rrv-haematology")

    async def alerted() -> bool:
        return all(
            [
                await feed(stack, tokens, "Organization/RRV", rrv),
                await feed(stack, tokens, "CareTeam/rpy-breast", breast),
                await feed(stack, tokens, "CareTeam/rrv-haematology", haematology),
            ]
        )

    await eventually(alerted)
    await settled(settings.data_dir)  # every event handled: a second alert, or RAL's, would be there now
    [organisation] = await feed(stack, tokens, "Organization/RRV", rrv)
    assert organisation["about"] == [{"reference": document}]
    assert organisation["sender"] == {"identifier": {"system": ODS_CODE, "value": "RJ1"}}
    assert organisation["category"][0]["coding"][0]["code"] == "intended-recipient"
    assert len(await feed(stack, tokens, "CareTeam/rpy-breast", breast)) == 1
    assert len(await feed(stack, tokens, "CareTeam/rrv-haematology", haematology)) == 1
    assert await feed(stack, tokens, "Organization/RAL", tokens.headers("RAL", "bed-manager")) == []
    assert (
        await feed(
            stack, tokens, "CareTeam/ral-colorectal", tokens.headers("RAL", "mdt-coordinator", mdt="ral-colorectal")
        )
        == []
    )


async def test_a_document_references_own_recipient_is_told_of_that_document_only(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    await policy_known(stack)
    named, other = document_reference(related=()), document_reference(related=(), type_code="57133-1")
    named["contained"] = [
        {
            "resourceType": "PractitionerRole",
            "id": "gp",
            "organization": {"identifier": {"system": ODS_CODE, "value": "RPY"}},
        }
    ]
    named["extension"] = [recipient({"reference": "#gp"})]
    bundle = provide_bundle(named, other)

    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})

    assert response.status == 200, await response.text()
    answer = await response.json()
    assert "outcome" not in answer["entry"][0]["response"]  # every recipient resolved and admitted
    rpy = tokens.headers("RPY", "bed-manager")
    await eventually(lambda: feed(stack, tokens, "Organization/RPY", rpy))
    await settled(settings.data_dir)
    alerts = await feed(stack, tokens, "Organization/RPY", rpy)
    assert [a["about"] for a in alerts] == [[{"reference": answer["entry"][1]["response"]["location"]}]]


@pytest.mark.parametrize(
    ("reference", "contained", "expected"),
    [
        ({"reference": "Organization/RRV"}, [], "Organization/RRV"),
        ({"identifier": {"system": ODS_CODE, "value": "RRV"}}, [], "Organization/RRV"),
        ({"type": "Practitioner", "identifier": {"system": ODS_CODE, "value": "RRV"}}, [], None),
        (
            {"reference": "#o"},
            [{"resourceType": "Organization", "id": "o", "identifier": [{"system": ODS_CODE, "value": "RPY"}]}],
            "Organization/RPY",
        ),
        ({"reference": "#o"}, [{"resourceType": "Organization", "id": "o", "name": "my Hospital"}], None),
        (
            {"reference": "#r"},
            [{"resourceType": "PractitionerRole", "id": "r", "organization": {"reference": "Organization/RAL"}}],
            "Organization/RAL",
        ),
        (
            {"reference": "#p"},
            [
                {
                    "resourceType": "Practitioner",
                    "id": "p",
                    "telecom": [{"system": "email", "value": "someone@example.org"}],
                }
            ],
            None,
        ),
        ({"reference": "CareTeam/rj1-lung"}, [], "CareTeam/rj1-lung"),
        ({"reference": "CareTeam/a/_history/1"}, [], None),
        ({"reference": "#missing"}, [], None),
        ("Organization/RRV", [], None),
    ],
)
def test_what_an_intended_recipient_resolves_to(
    reference: Any, contained: list[dict[str, Any]], expected: str | None
) -> None:
    assert resolve(reference, {c["id"]: c for c in contained}) == expected
