"""Events as FHIR AuditEvents (IHE BALP's basic shape): who, what, when, from where, with what outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import Event, RoutingKey
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LHCIE_EVENTS = "https://lhcie.london/fhir/CodeSystem/event-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
REQUEST_ID = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

# routing key -> (FHIR action, RESTful interaction, outcome): outcome 0 success, 4 minor failure.
KINDS: dict[RoutingKey, tuple[str, str, str]] = {
    RoutingKey.DOCUMENT_RECEIVED: ("C", "create", "0"),
    RoutingKey.DOCUMENT_STORED: ("C", "create", "0"),
    RoutingKey.DOCUMENT_REJECTED: ("C", "create", "4"),
    RoutingKey.DOCUMENT_RETRIEVED: ("R", "read", "0"),
    RoutingKey.ACCESS_DENIED: ("R", "read", "4"),
    RoutingKey.ALERT_RAISED: ("C", "create", "0"),
    RoutingKey.ALERT_ACKNOWLEDGED: ("U", "update", "0"),
    RoutingKey.ALERT_ESCALATED: ("U", "update", "0"),
    RoutingKey.WEBHOOK_DELIVERED: ("E", "create", "0"),
    RoutingKey.WEBHOOK_FAILED: ("E", "create", "4"),
}
NOT_AUDITED_SUFFIX = ".synced"  # start-up re-announcements of unchanged policy state


def audited(event: Event) -> bool:
    return not event.type.endswith(NOT_AUDITED_SUFFIX)


def _kind(event: Event) -> tuple[str, str, str]:
    return KINDS.get(event.type, ("U", "update", "0"))


def index_fields(event: Event) -> dict[str, Any]:
    """The searchable facts of an event: entities, organisations involved, patient."""
    data = event.data
    document = data.get("document") or {}
    entities: list[str] = []
    if document.get("document_id"):
        entities += [f"DocumentReference/{document['document_id']}", f"Binary/{document['document_id']}"]
    for key, prefix in (("document_id", "DocumentReference/"), ("alert_id", "Communication/"),
                        ("agreement_id", "Contract/"), ("careteam_id", "CareTeam/"), ("ods_code", "Organization/")):
        if data.get(key):
            entities.append(prefix + str(data[key]))
    if data.get("resource"):
        entities.append(str(data["resource"]))
        if str(data["resource"]).startswith("Binary/"):
            entities.append("DocumentReference/" + str(data["resource"]).removeprefix("Binary/"))
    orgs = {o for o in (
        (data.get("actor") or {}).get("org"),
        document.get("custodian"),
        data.get("organisation"),
        data.get("ods_code"),
    ) if o}
    orgs.update(data.get("parties") or [])
    patient = document.get("patient_nhs_number") or data.get("patient_nhs_number")
    return {"entities": sorted(set(entities)), "orgs": sorted(orgs), "patient": patient}


def to_audit_event(event: Event, *, recorded: datetime | None = None) -> dict[str, Any]:
    action, interaction, outcome = _kind(event)
    data = event.data
    actor = data.get("actor")
    agents: list[dict[str, Any]] = []
    if actor:
        agent: dict[str, Any] = {
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153",
                                 "display": "Source Role ID"}]},
            "who": {"identifier": {"value": actor["subject"]}, "display": actor["subject"]},
            "requestor": True,
            "role": [{"text": actor["role"]}],
            "extension": [{"url": "https://lhcie.london/fhir/StructureDefinition/agent-organisation",
                           "valueIdentifier": {"system": ODS_CODE, "value": actor["org"]}}],
        }
        if actor.get("address"):
            agent["network"] = {"address": actor["address"], "type": "2"}
        agents.append(agent)
    agents.append({"who": {"display": event.source}, "requestor": not actor})
    fields = index_fields(event)
    entities: list[dict[str, Any]] = [
        {"what": {"reference": ref}, "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}}
        for ref in fields["entities"]
    ]
    if fields["patient"]:
        entities.append({
            "what": {"identifier": {"system": NHS_NUMBER, "value": fields["patient"]}},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        })
    if event.correlationid:
        entities.append({
            "what": {"identifier": {"value": event.correlationid}},
            "type": {"system": REQUEST_ID, "code": "XrequestId"},
        })
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [
            {"system": RESTFUL, "code": interaction},
            {"system": LHCIE_EVENTS, "code": str(event.type)},
        ],
        "action": action,
        "period": {"start": event.time.isoformat(), "end": event.time.isoformat()},
        "recorded": (recorded or datetime.now(UTC)).isoformat(),
        "outcome": outcome,
        "agent": agents,
        "source": {"observer": {"display": event.source},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": entities,
    }
    if outcome != "0" and data.get("reason"):
        resource["outcomeDesc"] = str(data["reason"])
    return resource
