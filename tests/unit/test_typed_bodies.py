"""Every request body is checked against its typed model (issue 17): a wrong type anywhere in the body of
Contract, Organization, CareTeam, RelatedPerson, Consent, Subscription, EpisodeOfCare and the operations'
Parameters is a 422 OperationOutcome naming the field, and no body at all is ever a 5xx."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.fhir.identifiers import ODS_CODE
from tests.helpers import TEST_PATIENT
from tests.unit.test_intake_errors import FHIR, outcome

COORDINATOR = {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}
ADMIN = {"org": "RJ1", "role": "dcc-admin"}
PATIENT = {"org": "NHSLOGIN", "role": "patient", "patient": TEST_PATIENT}
SYSTEM = {"org": "RJ1", "role": "system"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    who: dict[str, Any]
    body: dict[str, Any]


PARAMETERS = {"resourceType": "Parameters", "parameter": [{"name": "organization", "valueString": "RAL"}]}
ENDPOINTS = {
    "Contract": Endpoint(
        "POST",
        "/fhir/Contract",
        ADMIN,
        {
            "resourceType": "Contract",
            "title": "Sharing",
            "authority": [{"identifier": {"system": ODS_CODE, "value": "RAL"}}],
        },
    ),
    "Organization": Endpoint(
        "POST",
        "/fhir/Organization",
        ADMIN,
        {"resourceType": "Organization", "identifier": [{"system": ODS_CODE, "value": "F84003"}], "name": "Practice"},
    ),
    "Organization-put": Endpoint(
        "PUT",
        "/fhir/Organization/F84003",
        ADMIN,
        {"resourceType": "Organization", "identifier": [{"system": ODS_CODE, "value": "F84003"}], "name": "Practice"},
    ),
    "CareTeam": Endpoint(
        "POST", "/fhir/CareTeam", ADMIN, {"resourceType": "CareTeam", "id": "rj1-new", "name": "New team"}
    ),
    "CareTeam-put": Endpoint("PUT", "/fhir/CareTeam/rj1-lung", ADMIN, {"resourceType": "CareTeam", "name": "Lung"}),
    "RelatedPerson": Endpoint(
        "POST", "/fhir/RelatedPerson", PATIENT, {"resourceType": "RelatedPerson", "name": [{"text": "Sam"}]}
    ),
    "Consent": Endpoint("PUT", "/fhir/Consent/preferences", PATIENT, {"resourceType": "Consent", "status": "active"}),
    "$merge": Endpoint(
        "POST",
        "/fhir/Contract/$merge",
        ADMIN,
        {"resourceType": "Parameters", "parameter": [{"name": "agreement", "valueString": "a"}]},
    ),
    "$retire": Endpoint(
        "POST",
        "/fhir/Contract/x/$retire",
        ADMIN,
        {"resourceType": "Parameters", "parameter": [{"name": "replacedBy", "valueString": "y"}]},
    ),
    "$approve-join": Endpoint("POST", "/fhir/Contract/x/$approve-join", ADMIN, PARAMETERS),
    "$reject-join": Endpoint("POST", "/fhir/Contract/x/$reject-join", ADMIN, PARAMETERS),
    "$record-event": Endpoint(
        "POST",
        "/fhir/EpisodeOfCare/x/$record-event",
        COORDINATOR,
        {"resourceType": "Parameters", "parameter": [{"name": "event", "valueCode": "clock-pause"}]},
    ),
    "$transfer": Endpoint(
        "POST",
        "/fhir/EpisodeOfCare/x/$transfer",
        COORDINATOR,
        {"resourceType": "Parameters", "parameter": [{"name": "team", "valueReference": {"reference": "CareTeam/x"}}]},
    ),
    "EpisodeOfCare": Endpoint(
        "POST", "/fhir/EpisodeOfCare", COORDINATOR, {"resourceType": "EpisodeOfCare", "status": "active"}
    ),
    "Subscription": Endpoint(
        "POST",
        "/fhir/Subscription",
        SYSTEM,
        {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "r",
            "criteria": "Communication",
            "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
        },
    ),
}

# (endpoint, field, wrong value, the expression named)
WRONG_TYPES = [
    ("Contract", "title", {"a": 1}, "Contract.title"),
    ("Contract", "authority", "RAL", "Contract.authority"),
    ("Organization", "name", ["Practice"], "Organization.name"),
    ("Organization", "identifier", [{"system": 1, "value": {"x": 1}}], "Organization.identifier[0].value"),
    ("Organization-put", "active", "yes", "Organization.active"),
    ("CareTeam", "name", 5, "CareTeam.name"),
    ("CareTeam-put", "managingOrganization", {"reference": "x"}, "CareTeam.managingOrganization"),
    ("RelatedPerson", "name", {"text": "Sam"}, "RelatedPerson.name"),
    ("Consent", "provision", [], "Consent.provision"),
    ("$merge", "parameter", {"name": "agreement"}, "Parameters.parameter"),
    ("$retire", "parameter", [{"name": 1, "valueString": "y"}], "Parameters.parameter[0].name"),
    (
        "$approve-join",
        "parameter",
        [{"name": "organization", "valueString": ["RAL"]}],
        "Parameters.parameter[0].valueString",
    ),
    ("$record-event", "parameter", [{"name": "event", "valueCode": {"x": 1}}], "Parameters.parameter[0].valueCode"),
    (
        "$transfer",
        "parameter",
        [{"name": "team", "valueReference": "CareTeam/x"}],
        "Parameters.parameter[0].valueReference",
    ),
    ("EpisodeOfCare", "team", {"reference": "CareTeam/x"}, "EpisodeOfCare.team"),
    ("Subscription", "channel", "rest-hook", "Subscription.channel"),
    ("Subscription", "criteria", ["Communication"], "Subscription.criteria"),
]


async def send(stack: TestClient, tokens: Any, endpoint: Endpoint, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = await stack.request(
        endpoint.method, endpoint.path, data=data, headers={**FHIR, **tokens.headers(**endpoint.who)}
    )
    assert response.content_type == "application/fhir+json", await response.text()
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("name", "field", "value", "expression"), WRONG_TYPES, ids=[f"{w[0]}.{w[1]}" for w in WRONG_TYPES]
)
async def test_a_wrong_type_is_422_naming_the_field(
    stack: TestClient, tokens: Any, name: str, field: str, value: Any, expression: str
) -> None:
    endpoint = ENDPOINTS[name]
    status, body = await send(stack, tokens, endpoint, {**endpoint.body, field: value})
    assert status == 422, body
    assert body["resourceType"] == "OperationOutcome"
    assert [expression] in [i["expression"] for i in body["issue"]]
    assert {(i["severity"], i["code"], i["details"]["coding"][0]["code"]) for i in body["issue"]} == {
        ("error", "invalid", "INVALID_RESOURCE")
    }


async def test_the_whole_outcome_of_a_wrong_type(stack: TestClient, tokens: Any) -> None:
    endpoint = ENDPOINTS["Organization"]
    status, body = await send(stack, tokens, endpoint, {**endpoint.body, "name": ["Practice"]})
    assert (status, body) == (
        422,
        outcome("INVALID_RESOURCE", "invalid", "Input should be a valid string", "Organization.name"),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=12,
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(ENDPOINTS)))
    body: Any = dict(ENDPOINTS[name].body)
    for field in draw(
        st.lists(
            st.sampled_from(
                [
                    *body,
                    "id",
                    "extension",
                    "identifier",
                    "parameter",
                    "name",
                    "period",
                    "provision",
                    "channel",
                    "status",
                    "team",
                ]
            ),
            max_size=3,
            unique=True,
        )
    ):
        body[field] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        body = draw(json_values)  # not even an object
    return name, body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=hostile_bodies())
async def test_no_body_is_ever_a_5xx(stack: TestClient, tokens: Any, case: tuple[str, Any]) -> None:
    name, body = case
    status, answer = await send(stack, tokens, ENDPOINTS[name], body)
    assert 200 <= status < 500, (name, answer)
