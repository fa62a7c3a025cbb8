"""Every kind of event becomes a BALP-shaped AuditEvent: who (user, organisation, role, network
address), which service, what (entities, patient by NHS number, the request id), outcome and purpose."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from services.audit.records import KINDS, NOT_AUDITED_SUFFIX, kind_of, records_for
from shared.events import (
    AccessDenied,
    Actor,
    AgreementState,
    AgreementStatus,
    AlertAcknowledged,
    AlertEscalated,
    AlertRaised,
    CarePlanChanged,
    CarerGrantState,
    CareTeamState,
    DischargeChanged,
    DocumentFacts,
    DocumentReceived,
    DocumentRejected,
    DocumentRetrieved,
    DocumentSearched,
    DocumentStatusChanged,
    DocumentStored,
    Event,
    OperationInvoked,
    OrganisationState,
    PatientPreferencesState,
    Payload,
    RecordRead,
    RoutingKey,
    TransferChanged,
    WebhookDelivered,
    WebhookFailed,
)

NHS = "9000000009"
RECORDED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FACTS = DocumentFacts(
    document_id="doc-1",
    patient_nhs_number=NHS,
    custodian="RJ1",
    content_type="application/pdf",
    size=10,
    sha256="0" * 64,
)
CLINICIAN = Actor(org="RRV", role="clinician", subject="dr.okafor@RRV", address="10.1.2.3")
SUBMITTER = Actor(org="RJ1", role="system", subject="system@RJ1", address="10.9.9.9")
COORDINATOR = Actor(org="RJ1", role="mdt-coordinator", subject="coordinator@RJ1", mdt="rj1-lung")

DOC = ["DocumentReference/doc-1", "Binary/doc-1"]
ALERT = ["DocumentReference/doc-1", "Communication/alert-1"]


def agreement(status: AgreementStatus) -> AgreementState:
    return AgreementState(
        agreement_id="isa-1",
        title="Cancer ISA",
        parties=("RJ1", "RRV"),
        purposes=("direct-care",),
        status=status,
        version=1,
        actor=Actor(org="RJ1", role="dcc-admin", subject="dpo@RJ1"),
    )


# routing key -> (payload, action, interaction, outcome, purpose, entity references, patient?, actor)
CASES: dict[str, tuple[Payload, str, str, str, str, list[str], bool, Actor | None]] = {
    "document.received": (
        DocumentReceived(submission_id="s-1", document=FACTS, staging_key="staging/s-1", actor=SUBMITTER),
        "C",
        "create",
        "0",
        "TREAT",
        DOC,
        True,
        SUBMITTER,
    ),
    "document.stored": (
        DocumentStored(submission_id="s-1", document=FACTS, object_key="docs/doc-1", stored_at=RECORDED),
        "C",
        "create",
        "0",
        "TREAT",
        DOC,
        True,
        None,
    ),
    "document.rejected": (
        DocumentRejected(submission_id="s-1", document=FACTS, reason_code="not-pdf", reason="not a PDF"),
        "C",
        "create",
        "4",
        "TREAT",
        DOC,
        True,
        None,
    ),
    "document.retrieved": (
        DocumentRetrieved(document=FACTS, actor=Actor(org="RJ1", role="clinician", subject="dr.lee@RJ1")),
        "R",
        "read",
        "0",
        "TREAT",
        DOC,
        True,
        Actor(org="RJ1", role="clinician", subject="dr.lee@RJ1"),
    ),
    "document.superseded": (
        DocumentStatusChanged(document=FACTS, status="superseded", replaced_by="doc-2", actor=SUBMITTER),
        "U",
        "update",
        "0",
        "TREAT",
        [*DOC, "DocumentReference/doc-2"],
        True,
        SUBMITTER,
    ),
    "document.withdrawn": (
        DocumentStatusChanged(document=FACTS, status="entered-in-error", actor=SUBMITTER),
        "D",
        "delete",
        "0",
        "TREAT",
        DOC,
        True,
        SUBMITTER,
    ),
    "document.searched": (
        DocumentSearched(
            actor=CLINICIAN, patient_nhs_number=NHS, query="patient.identifier=x%7C9000000009&type=11526-1", results=2
        ),
        "E",
        "search",
        "0",
        "TREAT",
        [],
        True,
        CLINICIAN,
    ),
    "access.denied": (
        AccessDenied(
            actor=CLINICIAN,
            resource="Binary/doc-1",
            action="read",
            reason_code="no-isa",
            reason="no accepted ISA",
            patient_nhs_number=NHS,
        ),
        "R",
        "read",
        "4",
        "TREAT",
        ["Binary/doc-1", "DocumentReference/doc-1"],
        True,
        CLINICIAN,
    ),
    "alert.raised": (
        AlertRaised(alert_id="alert-1", recipient="CareTeam/rj1-lung", priority="urgent", document=FACTS),
        "C",
        "create",
        "0",
        "TREAT",
        [*DOC, "Communication/alert-1", "CareTeam/rj1-lung"],
        True,
        None,
    ),
    "alert.acknowledged": (
        AlertAcknowledged(
            alert_id="alert-1",
            recipient="CareTeam/rj1-lung",
            document_id="doc-1",
            patient_nhs_number=NHS,
            actor=COORDINATOR,
        ),
        "U",
        "update",
        "0",
        "TREAT",
        [*ALERT, "CareTeam/rj1-lung"],
        True,
        COORDINATOR,
    ),
    "alert.escalated": (
        AlertEscalated(
            alert_id="alert-1",
            recipient="CareTeam/rj1-lung",
            escalated_to="CareTeam/rj1-lead",
            reason="unacknowledged",
            document_id="doc-1",
            patient_nhs_number=NHS,
        ),
        "U",
        "update",
        "0",
        "TREAT",
        [*ALERT, "CareTeam/rj1-lung", "CareTeam/rj1-lead"],
        True,
        None,
    ),
    "webhook.delivered": (
        WebhookDelivered(subscription_id="sub-1", event_number=3, endpoint_host="ehr.rj1.nhs.uk", attempts=1),
        "E",
        "create",
        "0",
        "TREAT",
        ["Subscription/sub-1"],
        False,
        None,
    ),
    "webhook.failed": (
        WebhookFailed(
            subscription_id="sub-1", event_number=3, endpoint_host="ehr.rj1.nhs.uk", attempts=5, reason="HTTP 503"
        ),
        "E",
        "create",
        "4",
        "TREAT",
        ["Subscription/sub-1"],
        False,
        None,
    ),
    "policy.organisation.updated": (
        OrganisationState(ods_code="RJ1", name="Guy's and St Thomas'", kind="trust", version=1),
        "U",
        "update",
        "0",
        "HOPERAT",
        ["Organization/RJ1"],
        False,
        None,
    ),
    "policy.careteam.updated": (
        CareTeamState(careteam_id="rj1-lung", name="Lung MDT", organisation="RJ1", version=1),
        "U",
        "update",
        "0",
        "HOPERAT",
        ["CareTeam/rj1-lung", "Organization/RJ1"],
        False,
        None,
    ),
    **{
        f"policy.agreement.{status}": (
            agreement(AgreementStatus(status) if status != "updated" else AgreementStatus.PROPOSED),
            "C" if status == "proposed" else "U",
            "create" if status == "proposed" else "update",
            "0",
            "HOPERAT",
            ["Contract/isa-1"],
            False,
            Actor(org="RJ1", role="dcc-admin", subject="dpo@RJ1"),
        )
        for status in ("proposed", "accepted", "rejected", "revoked", "expired", "updated")
    },
    "policy.consent.carer_granted": (
        CarerGrantState(grant_id="g-1", patient_nhs_number=NHS, carer_subject="carer-1", carer_name="Sam", version=1),
        "C",
        "create",
        "0",
        "PATRQT",
        ["Consent/g-1"],
        True,
        None,
    ),
    "policy.consent.carer_revoked": (
        CarerGrantState(
            grant_id="g-1", patient_nhs_number=NHS, carer_subject="carer-1", carer_name="Sam", active=False, version=2
        ),
        "U",
        "update",
        "0",
        "PATRQT",
        ["Consent/g-1"],
        True,
        None,
    ),
    "policy.consent.preferences_updated": (
        PatientPreferencesState(patient_nhs_number=NHS, opted_out_organisations=("RAL",), version=1),
        "U",
        "update",
        "0",
        "PATRQT",
        [],
        True,
        None,
    ),
    "record.read": (
        RecordRead(
            actor=CLINICIAN, resource="DocumentReference/doc-1", action="read", patient_nhs_number=NHS, rule="isa"
        ),
        "R",
        "read",
        "0",
        "TREAT",
        ["DocumentReference/doc-1"],
        True,
        CLINICIAN,
    ),
    "operation.invoked": (
        OperationInvoked(
            actor=Actor(org="LHCIE", role="exchange-operator", subject="ops@LHCIE"),
            operation="$reconcile",
            target="Subscription/sub-1",
        ),
        "E",
        "operation",
        "0",
        "HSYSADMIN",
        ["Subscription/sub-1"],
        False,
        Actor(org="LHCIE", role="exchange-operator", subject="ops@LHCIE"),
    ),
}

# The care service (issue 18).
CARE_ACTOR = Actor(org="RJ1", role="clinician", subject="dr@RJ1")
_PLAN = dict(
    plan_id="plan-1",
    resource="CarePlan/plan-1",
    version=1,
    status="active",
    record_type="736373009",
    patient_nhs_number=NHS,
    custodian="RJ1",
    actor=CARE_ACTOR,
)
_TRANSFER = dict(
    task_id="t-1",
    resource="Task/t-1",
    patient_nhs_number=NHS,
    sender="RJ1",
    receiver="RRV",
    requested_at=RECORDED,
    hours_waited=0.0,
)
_SUMMARY = dict(summary_id="s-1", resource="Bundle/s-1", patient_nhs_number=NHS, sender="RJ1", recipient="G85001")
CASES.update(
    {
        "careplan.created": (
            CarePlanChanged(**_PLAN),
            "C",
            "create",
            "0",
            "TREAT",
            ["CarePlan/plan-1"],
            True,
            CARE_ACTOR,
        ),
        "careplan.updated": (
            CarePlanChanged(**{**_PLAN, "version": 2}),
            "U",
            "update",
            "0",
            "TREAT",
            ["CarePlan/plan-1"],
            True,
            CARE_ACTOR,
        ),
        "transfer.requested": (
            TransferChanged(**_TRANSFER, state="requested", actor=CARE_ACTOR),
            "C",
            "create",
            "0",
            "TREAT",
            ["Task/t-1"],
            True,
            CARE_ACTOR,
        ),
        "transfer.updated": (
            TransferChanged(**_TRANSFER, state="accepted", actor=CARE_ACTOR),
            "U",
            "update",
            "0",
            "TREAT",
            ["Task/t-1"],
            True,
            CARE_ACTOR,
        ),
        "transfer.escalated": (
            TransferChanged(**_TRANSFER, state="accepted"),
            "U",
            "update",
            "0",
            "TREAT",
            ["Task/t-1"],
            True,
            None,
        ),
        "discharge.delivered": (
            DischargeChanged(**_SUMMARY, actor=CARE_ACTOR),
            "C",
            "create",
            "0",
            "TREAT",
            ["Bundle/s-1"],
            True,
            CARE_ACTOR,
        ),
        "discharge.acknowledged": (
            DischargeChanged(
                **_SUMMARY, acknowledgement="business", outcome="accepted", code="patient-known", actor=CARE_ACTOR
            ),
            "U",
            "update",
            "0",
            "TREAT",
            ["Bundle/s-1"],
            True,
            CARE_ACTOR,
        ),
        "discharge.superseded": (
            DischargeChanged(**_SUMMARY, superseded_by="s-2", actor=CARE_ACTOR),
            "U",
            "update",
            "0",
            "TREAT",
            ["Bundle/s-1"],
            True,
            CARE_ACTOR,
        ),
        "discharge.escalated": (DischargeChanged(**_SUMMARY), "U", "update", "0", "TREAT", ["Bundle/s-1"], True, None),
    }
)


def event_for(key: str, payload: Payload, *, correlation: str | None = "req-123") -> Event:
    return Event.new(RoutingKey(key), payload, source="urn:lhcie:service:test", correlation_id=correlation)


def codes(concepts: list[dict[str, Any]]) -> list[str]:
    return [c["code"] for c in concepts]


def agent_types(resource: dict[str, Any]) -> list[str]:
    return [a["type"]["coding"][0]["code"] for a in resource["agent"]]


def test_every_event_kind_in_the_contract_is_covered() -> None:
    audited = {str(k) for k in RoutingKey if not k.endswith(NOT_AUDITED_SUFFIX)}
    assert audited <= set(KINDS)
    assert audited == set(CASES)


@pytest.mark.parametrize("key", sorted(CASES))
def test_each_kind_of_event_becomes_a_balp_audit_event(key: str) -> None:
    payload, action, interaction, outcome, purpose, refs, has_patient, actor = CASES[key]
    event = event_for(key, payload)
    [(record_id, resource, index)] = records_for(event, recorded=RECORDED)

    assert record_id == event.id
    assert resource["resourceType"] == "AuditEvent"
    assert resource["meta"]["profile"][0].startswith(
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
    )
    assert resource["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "RESTful Operation",
    }
    assert resource["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": interaction},
        {"system": "https://lhcie.london/fhir/CodeSystem/event-type", "code": key},
    ]
    assert (resource["action"], resource["outcome"]) == (action, outcome)
    assert codes(resource["purposeOfEvent"][0]["coding"]) == [purpose]
    assert resource["recorded"] == RECORDED.isoformat()
    assert resource["period"] == {"start": event.time.isoformat(), "end": event.time.isoformat()}
    assert resource["source"]["observer"] == {"display": "urn:lhcie:service:test"}

    server = next(a for a in resource["agent"] if a["type"]["coding"][0]["code"] == "110152")
    assert server["who"] == {"display": "urn:lhcie:service:test"}
    if actor is None:
        assert agent_types(resource) == ["110152"] and server["requestor"] is True
    else:
        reading = action in ("R", "E") and interaction != "operation"
        user_type = "IRCP" if reading else ("dataprocessor" if actor.role == "system" else "humanuser")
        assert agent_types(resource) == ["110153", "110152", user_type, "PROV"]
        client, _, user, org = resource["agent"]
        assert client["who"]["identifier"] == {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": actor.org,
        }
        assert client.get("network") == ({"address": actor.address, "type": "2"} if actor.address else None)
        assert user["who"]["identifier"]["value"] == actor.subject and user["requestor"] is True
        assert user["role"][0]["coding"][0]["code"] == actor.role
        assert codes(user["purposeOfUse"][0]["coding"]) == [purpose]
        assert org["who"]["identifier"]["value"] == actor.org and org["requestor"] is False
        assert index["agent_orgs"] == [actor.org]

    entity_refs = [e["what"]["reference"] for e in resource["entity"] if "reference" in e.get("what", {})]
    assert entity_refs == refs
    patients = [e for e in resource["entity"] if e.get("role", {}).get("code") == "1"]
    assert patients == (
        [
            {
                "what": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        ]
        if has_patient
        else []
    )
    assert resource["entity"][-1] == {
        "what": {"identifier": {"value": "req-123"}},
        "type": {
            "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
            "code": "XrequestId",
            "display": "X-Request-Id",
        },
    }
    assert index["entities"] == refs and index["patient"] == (NHS if has_patient else None)
    assert index["event_type"] == key and index["outcome"] == outcome and index["request_id"] == "req-123"
    assert index["date"] == "2026-11-25T12:00:00.000000Z"


def test_a_document_read_by_another_organisation_is_a_privacy_disclosure() -> None:
    event = event_for("document.retrieved", DocumentRetrieved(document=FACTS, actor=CLINICIAN))
    [(_, resource, index)] = records_for(event, recorded=RECORDED)
    assert {k: v for k, v in resource.items() if k not in ("period",)} == {
        "resourceType": "AuditEvent",
        "meta": {
            "profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"]
        },
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"},
        "subtype": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
                "code": "disclose",
                "display": "Disclose Record Lifecycle Event",
            },
            {"system": "https://lhcie.london/fhir/CodeSystem/event-type", "code": "document.retrieved"},
            {"system": "http://hl7.org/fhir/restful-interaction", "code": "read"},
        ],
        "action": "R",
        "recorded": "2026-11-25T12:00:00+00:00",
        "outcome": "0",
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "TREAT",
                        "display": "treatment",
                    }
                ]
            }
        ],
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110153",
                            "display": "Source Role ID",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RRV"},
                    "display": "RRV client system",
                },
                "requestor": False,
                "network": {"address": "10.1.2.3", "type": "2"},
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110152",
                            "display": "Destination Role ID",
                        }
                    ]
                },
                "who": {"display": "urn:lhcie:service:test"},
                "requestor": False,
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": "https://lhcie.london/Id/token-subject", "value": "dr.okafor@RRV"},
                    "display": "dr.okafor@RRV",
                },
                "requestor": True,
                "role": [{"coding": [{"system": "https://lhcie.london/fhir/CodeSystem/role", "code": "clinician"}]}],
                "purposeOfUse": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                "code": "TREAT",
                                "display": "treatment",
                            }
                        ]
                    }
                ],
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                            "code": "PROV",
                            "display": "healthcare provider",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RRV"},
                    "display": "RRV",
                },
                "requestor": False,
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "CST",
                            "display": "custodian",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RJ1"},
                    "display": "RJ1",
                },
                "requestor": False,
            },
        ],
        "source": {
            "site": "lhcie",
            "observer": {"display": "urn:lhcie:service:test"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": [
            {
                "what": {"reference": "DocumentReference/doc-1"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "3",
                    "display": "Report",
                },
            },
            {
                "what": {"reference": "Binary/doc-1"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "4",
                    "display": "Domain Resource",
                },
            },
            {
                "what": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            },
            {
                "what": {"identifier": {"value": "req-123"}},
                "type": {
                    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                    "code": "XrequestId",
                    "display": "X-Request-Id",
                },
            },
        ],
    }
    assert index["orgs"] == ["RJ1", "RRV"] and index["agent_orgs"] == ["RRV"]
    assert "disclose" in index["subtypes"] and "110106" in index["types"]


def test_a_decision_that_relied_on_consent_gets_its_own_authorized_decision_record() -> None:
    carer = Actor(org="RJ1", role="carer", subject="carer-1")
    event = event_for(
        "access.denied",
        AccessDenied(
            actor=carer,
            resource="Binary/doc-1",
            action="read",
            reason_code="no-carer-grant",
            reason="no active carer grant",
            patient_nhs_number=NHS,
        ),
    )
    [(decision_id, decision, index), (main_id, main, _)] = records_for(event, recorded=RECORDED)
    assert (decision_id, main_id) == (event.id + "#authz-consent", event.id)
    assert decision["meta"] == {
        "profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent"]
    }
    assert decision["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110113",
        "display": "Security Alert",
    }
    assert decision["subtype"][0] == {
        "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType",
        "code": "AuthZ-Consent",
        "display": "Authorization Decision using Roles and Consent",
    }
    assert (decision["action"], decision["outcome"], decision["outcomeDesc"]) == ("E", "4", "no active carer grant")
    assert agent_types(decision) == ["110153", "110152", "IRCP", "PROV", "authserver"]
    assert decision["entity"][:2] == [
        {
            "what": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
                "display": "Person",
            },
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        },
        {
            "what": {"display": "no active carer grant"},
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent", "display": "Consent"},
        },
    ]
    assert codes(decision["purposeOfEvent"][0]["coding"]) == ["PATRQT"]
    assert "AuthZ-Consent" in index["subtypes"]
    assert main["outcome"] == "4" and main["outcomeDesc"] == "no active carer grant"


def test_a_decision_by_organisation_rules_alone_has_no_consent_record() -> None:
    event = event_for(
        "access.denied",
        AccessDenied(
            actor=CLINICIAN,
            resource="Binary/doc-1",
            action="read",
            reason_code="no-isa",
            reason="no ISA",
            patient_nhs_number=NHS,
        ),
    )
    assert [r[0] for r in records_for(event)] == [event.id]


def test_an_event_without_a_request_id_has_no_request_entity() -> None:
    payload = CASES["document.stored"][0]
    [(_, resource, index)] = records_for(event_for("document.stored", payload, correlation=None))
    assert all(e["type"]["code"] != "XrequestId" for e in resource["entity"])
    assert index["request_id"] is None


@pytest.mark.parametrize(
    ("key", "action", "interaction"),
    [
        ("document.searched", "E", "search"),
        ("consent.deleted", "D", "delete"),
        ("thing.changed", "U", "update"),
    ],
)
def test_an_event_type_newer_than_the_table_is_still_recorded_by_its_verb(
    key: str, action: str, interaction: str
) -> None:
    kind = kind_of(key)
    assert (kind.action, kind.interaction, kind.outcome) == (action, interaction, "0")


def test_a_retrieval_allowed_by_consent_carries_a_consent_decision_record() -> None:
    by_consent = event_for("document.retrieved", DocumentRetrieved(document=FACTS, actor=CLINICIAN, rule="carer-grant"))
    by_isa = event_for("document.retrieved", DocumentRetrieved(document=FACTS, actor=CLINICIAN, rule="isa"))
    assert [r[0] for r in records_for(by_consent, recorded=RECORDED)] == [
        by_consent.id + "#authz-consent",
        by_consent.id,
    ]
    assert [r[0] for r in records_for(by_isa, recorded=RECORDED)] == [by_isa.id]


def test_a_search_read_is_a_balp_patient_query_with_its_query_and_the_consent_rule_as_basis() -> None:
    carer = Actor(org="NHSLOGIN", role="carer", subject="carer-1")
    event = event_for(
        "record.read",
        RecordRead(
            actor=carer,
            resource="Communication",
            action="search",
            patient_nhs_number=NHS,
            query="patient=9000000009",
            results=3,
            rule="carer-grant",
        ),
    )
    [(decision_id, decision, _), (_, main, index)] = records_for(event, recorded=RECORDED)
    assert decision_id == event.id + "#authz-consent" and decision["outcome"] == "0"
    assert (main["action"], main["subtype"][0]["code"]) == ("E", "search")
    assert main["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    ]
    query = next(e for e in main["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=9000000009"
    assert index["patient"] == NHS and index["entities"] == [] and index["rule"] == "carer-grant"


@pytest.mark.parametrize(
    ("action", "interaction"), [("read", "read"), ("vread", "vread"), ("download", "read"), ("export", "read")]
)
def test_every_other_read_is_a_balp_read(action: str, interaction: str) -> None:
    event = event_for("record.read", RecordRead(actor=CLINICIAN, resource="Contract/isa-1/$document", action=action))
    [(_, resource, index)] = records_for(event, recorded=RECORDED)
    assert (resource["action"], resource["subtype"][0]["code"]) == ("R", interaction)
    assert resource["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read"]
    # An agreement is read for the running of the exchange, and the record is about the Contract.
    assert codes(resource["purposeOfEvent"][0]["coding"]) == ["HOPERAT"]
    assert index["entities"] == ["Contract/isa-1"] and index["patient"] is None


def test_a_refused_operation_is_an_execute_record_that_failed() -> None:
    operator = Actor(org="RJ1", role="system", subject="system@RJ1")
    event = event_for(
        "operation.invoked",
        OperationInvoked(
            actor=operator,
            operation="$reconcile",
            target="Subscription",
            outcome="refused",
            detail="only the exchange operator",
        ),
    )
    [(_, resource, index)] = records_for(event, recorded=RECORDED)
    assert (resource["action"], resource["outcome"], resource["outcomeDesc"]) == (
        "E",
        "4",
        "only the exchange operator",
    )
    assert resource["subtype"][0] == {"system": "http://hl7.org/fhir/restful-interaction", "code": "operation"}
    assert codes(resource["purposeOfEvent"][0]["coding"]) == ["HSYSADMIN"]
    assert index["entities"] == [] and index["orgs"] == ["RJ1"]
