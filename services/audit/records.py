"""Events as FHIR AuditEvents following IHE BALP (Basic Audit Log Patterns).

Every record has the BALP basics: a type and subtypes (the RESTful interaction and the LHCIE event
type), action, outcome, purpose of event, the agents (the client system with its network address, the
LHCIE service that served it, the user with role and purpose of use, the user's organisation), the
source (which service observed it) and the entities (documents, alerts, agreements, consents, the
patient by NHS number, the query of a search, and the request's X-Request-Id as its own entity).

Two BALP patterns beyond the basics:
- Privacy Disclosure (at source): a document read by an organisation other than its custodian is a
  disclosure; the read's record takes that shape (type Export, subtype ``disclose``, custodian agent).
- Consent Authorized Decision: when an access decision relied on the patient's consent (a carer acting
  under a grant, a patient's sharing preferences), a second record describes that decision.

Each event becomes one or two records, each ``(record id, AuditEvent, search fields)``; the record id
is the event id (``#authz-consent`` appended for the decision record), so redelivery never duplicates.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.auth import Caller
from shared.events import Event
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
AUTHZ = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
LHCIE_EVENTS = "https://lhcie.london/fhir/CodeSystem/event-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
REQUEST_ID = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
LHCIE_ROLE = "https://lhcie.london/fhir/CodeSystem/role"
SUBJECT = "https://lhcie.london/Id/token-subject"
PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
AUDIT_SOURCE = "urn:lhcie:service:audit"

NOT_AUDITED_SUFFIX = ".synced"  # start-up re-announcements of unchanged policy state
CONSENT_SUFFIX = "#authz-consent"


@dataclass(frozen=True)
class Kind:
    action: str  # C R U D E
    interaction: str  # FHIR RESTful interaction (BALP subtype)
    outcome: str  # 0 success, 4 minor failure (the request was refused or failed)
    purpose: str  # v3-ActReason purpose of use


TREAT, PATRQT, HOPERAT, HSYSADMIN = "TREAT", "PATRQT", "HOPERAT", "HSYSADMIN"
PURPOSE_DISPLAY = {
    TREAT: "treatment",
    PATRQT: "patient requested",
    HOPERAT: "healthcare operations",
    HSYSADMIN: "health system administration",
}

KINDS: dict[str, Kind] = {
    "document.received": Kind("C", "create", "0", TREAT),
    "document.stored": Kind("C", "create", "0", TREAT),
    "document.rejected": Kind("C", "create", "4", TREAT),
    "document.retrieved": Kind("R", "read", "0", TREAT),
    "document.superseded": Kind("U", "update", "0", TREAT),
    # Marked entered-in-error by its custodian: withdrawn from use, the nearest the exchange comes to a delete.
    "document.withdrawn": Kind("D", "delete", "0", TREAT),
    "document.searched": Kind("E", "search", "0", TREAT),
    "access.denied": Kind("R", "read", "4", TREAT),
    "alert.raised": Kind("C", "create", "0", TREAT),
    "alert.acknowledged": Kind("U", "update", "0", TREAT),
    "alert.escalated": Kind("U", "update", "0", TREAT),
    "webhook.delivered": Kind("E", "create", "0", TREAT),
    "webhook.failed": Kind("E", "create", "4", TREAT),
    "policy.organisation.updated": Kind("U", "update", "0", HOPERAT),
    "policy.careteam.updated": Kind("U", "update", "0", HOPERAT),
    "policy.agreement.proposed": Kind("C", "create", "0", HOPERAT),
    "policy.agreement.accepted": Kind("U", "update", "0", HOPERAT),
    "policy.agreement.rejected": Kind("U", "update", "0", HOPERAT),
    "policy.agreement.revoked": Kind("U", "update", "0", HOPERAT),
    "policy.agreement.expired": Kind("U", "update", "0", HOPERAT),
    "policy.agreement.updated": Kind("U", "update", "0", HOPERAT),
    "policy.consent.carer_granted": Kind("C", "create", "0", PATRQT),
    "policy.consent.carer_revoked": Kind("U", "update", "0", PATRQT),
    "policy.consent.preferences_updated": Kind("U", "update", "0", PATRQT),
    # The audit service's own records (written straight into the chain, not from the bus).
    "audit.searched": Kind("E", "search", "0", HSYSADMIN),
    "audit.access-report": Kind("E", "search", "0", PATRQT),
    "audit.exported": Kind("E", "search", "0", HSYSADMIN),
    # A read of patient data or of a controlled record (BALP Read, or Query for a search): kind_of
    # refines it by the event's action.
    "record.read": Kind("R", "read", "0", TREAT),
    # An administrative operation with effects beyond one record: an execute by the system's administrators.
    "operation.invoked": Kind("E", "operation", "0", HSYSADMIN),
}
# The care service (issue 18): plans, repatriations and discharge summaries, recorded as their verbs say
# (a discharge summary's delivery is its disclosure to one recipient).
KINDS.update(
    {
        "careplan.created": Kind("C", "create", "0", TREAT),
        "careplan.updated": Kind("U", "update", "0", TREAT),
        "transfer.requested": Kind("C", "create", "0", TREAT),
        "transfer.updated": Kind("U", "update", "0", TREAT),
        "transfer.escalated": Kind("U", "update", "0", TREAT),
        "discharge.delivered": Kind("C", "create", "0", TREAT),
        "discharge.acknowledged": Kind("U", "update", "0", TREAT),
        "discharge.superseded": Kind("U", "update", "0", TREAT),
        "discharge.escalated": Kind("U", "update", "0", TREAT),
    }
)
# Access-decision rules that rest on the patient's consent (shared.policy rule names and the like).
CONSENT_RULES = ("carer", "consent", "opt-out", "opted-out", "preference")
ACTIONS = {"create": "C", "read": "R", "update": "U", "delete": "D", "search": "E"}
# record.read's actions as BALP interactions: a search is a Query ('E'); every other read is a Read ('R').
READS = {
    "search": ("E", "search"),
    "read": ("R", "read"),
    "vread": ("R", "vread"),
    "download": ("R", "read"),
    "export": ("R", "read"),
}
OPERATION_OUTCOMES = {"success": "0", "refused": "4", "failed": "8"}


def audited(event: Event) -> bool:
    return not event.type.endswith(NOT_AUDITED_SUFFIX)


def kind_of(event_type: str, data: dict[str, Any] | None = None) -> Kind:
    kind = KINDS.get(event_type)
    if kind is None:
        # An event type added to the contract after this table: still recorded, by the verb it ends in.
        verb = event_type.rsplit(".", 1)[-1]
        action = {"deleted": "D", "removed": "D", "created": "C", "raised": "C", "read": "R", "searched": "E"}.get(
            verb, "U"
        )
        interaction = {"C": "create", "D": "delete", "R": "read", "E": "search"}.get(action, "update")
        kind = Kind(action, interaction, "4" if verb == "failed" else "0", TREAT)
    if event_type == "access.denied" and data and data.get("action") in ACTIONS:
        kind = Kind(ACTIONS[data["action"]], data["action"], kind.outcome, kind.purpose)
    if event_type == "record.read" and data:
        action, interaction = READS.get(str(data.get("action")), ("R", "read"))
        # Reading an agreement is the running of the exchange, not the care of a patient.
        purpose = HOPERAT if str(data.get("resource", "")).startswith("Contract") else kind.purpose
        kind = Kind(action, interaction, kind.outcome, purpose)
    if event_type == "operation.invoked" and data:
        kind = Kind(kind.action, kind.interaction, OPERATION_OUTCOMES.get(str(data.get("outcome")), "8"), kind.purpose)
    return kind


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _token_values(codings: list[dict[str, str]]) -> list[str]:
    return sorted({c["code"] for c in codings} | {f"{c['system']}|{c['code']}" for c in codings})


def index_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Who:
    """The person (or system) behind an access, as far as the event tells."""

    org: str
    role: str
    subject: str
    address: str | None = None
    mdt: str | None = None

    @classmethod
    def of(cls, caller: Caller, address: str | None) -> Who:
        return cls(caller.org, caller.role, caller.subject, address, caller.mdt)


def _purpose(code: str) -> list[dict[str, Any]]:
    return [{"coding": [_coding(ACT_REASON, code, PURPOSE_DISPLAY.get(code))]}]


def _agents(
    who: Who | None, server: str, purpose: str, *, reading: bool, custodian: str | None
) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    if who is not None:
        client: dict[str, Any] = {
            "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
            "who": {"identifier": {"system": ODS_CODE, "value": who.org}, "display": f"{who.org} client system"},
            "requestor": False,
        }
        if who.address:
            client["network"] = {"address": who.address, "type": "2"}
        agents.append(client)
    agents.append(
        {
            "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
            "who": {"display": server},
            "requestor": who is None,
        }
    )
    if who is not None:
        user_type = (
            _coding(PARTICIPATION, "IRCP", "information recipient")
            if reading
            else (
                _coding(SECURITY_ROLE, "dataprocessor", "data processor")
                if who.role == "system"
                else _coding(SECURITY_ROLE, "humanuser", "human user")
            )
        )
        roles = [{"coding": [_coding(LHCIE_ROLE, who.role)]}]
        if who.mdt:
            roles.append({"coding": [_coding("https://lhcie.london/fhir/CodeSystem/careteam", who.mdt)]})
        agents.append(
            {
                "type": {"coding": [user_type]},
                "who": {"identifier": {"system": SUBJECT, "value": who.subject}, "display": who.subject},
                "requestor": True,
                "role": roles,
                "purposeOfUse": _purpose(purpose),
            }
        )
        agents.append(
            {
                "type": {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]},
                "who": {"identifier": {"system": ODS_CODE, "value": who.org}, "display": who.org},
                "requestor": False,
            }
        )
    if custodian is not None:
        agents.append(
            {
                "type": {"coding": [_coding(PARTICIPATION, "CST", "custodian")]},
                "who": {"identifier": {"system": ODS_CODE, "value": custodian}, "display": custodian},
                "requestor": False,
            }
        )
    return agents


def _entity(ref: str) -> dict[str, Any]:
    rtype = ref.split("/", 1)[0]
    role = ("3", "Report") if rtype == "DocumentReference" else ("4", "Domain Resource")
    return {
        "what": {"reference": ref},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, *role),
    }


def _patient_entity(nhs: str) -> dict[str, Any]:
    return {
        "what": {"identifier": {"system": NHS_NUMBER, "value": nhs}},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient"),
    }


def _request_entity(request_id: str) -> dict[str, Any]:
    return {"what": {"identifier": {"value": request_id}}, "type": _coding(REQUEST_ID, "XrequestId", "X-Request-Id")}


def _query_entity(query: str) -> dict[str, Any]:
    return {
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "24", "Query"),
        "query": base64.b64encode(query.encode()).decode(),
    }


def facts(event: Event) -> dict[str, Any]:
    """What an event says about who, what and whom: entities, organisations, patient, actor."""
    data = event.data
    document = data.get("document") or {}
    refs: list[str] = []
    if document.get("document_id"):
        refs += [f"DocumentReference/{document['document_id']}", f"Binary/{document['document_id']}"]
    for key, prefix in (
        ("document_id", "DocumentReference/"),
        ("alert_id", "Communication/"),
        ("subscription_id", "Subscription/"),
        ("agreement_id", "Contract/"),
        ("careteam_id", "CareTeam/"),
        ("organisation", "Organization/"),
        ("ods_code", "Organization/"),
        ("grant_id", "Consent/"),
        ("recipient", ""),
        ("escalated_to", ""),
        ("replaced_by", "DocumentReference/"),
        ("target", ""),
    ):
        value = data.get(key)
        if value and (prefix or "/" in str(value)):
            refs.append(prefix + str(value))
    if data.get("resource"):
        # "Contract/{id}/$document" is about Contract/{id}; a search base ("Communication") names no record.
        resource = str(data["resource"]).split("/$", 1)[0]
        if "/" in resource:
            refs.append(resource)
        if resource.startswith("Binary/"):
            refs.append("DocumentReference/" + resource.removeprefix("Binary/"))
    actor = data.get("actor") or {}
    orgs = {
        o for o in (actor.get("org"), document.get("custodian"), data.get("organisation"), data.get("ods_code")) if o
    }
    orgs.update(data.get("parties") or [])
    patient = document.get("patient_nhs_number") or data.get("patient_nhs_number")
    if not patient:
        for nested in ("carer_grant", "preferences"):
            patient = patient or (data.get(nested) or {}).get("patient_nhs_number")
    who = Who(actor["org"], actor["role"], actor["subject"], actor.get("address"), actor.get("mdt")) if actor else None
    return {
        "entities": list(dict.fromkeys(refs)),
        "orgs": sorted(orgs),
        "patient": patient,
        "who": who,
        "custodian": document.get("custodian"),
    }


def consent_basis(event: Event, who: Who | None) -> str | None:
    """Why an access decision relied on the patient's consent, if it did."""
    rule = str(event.data.get("reason_code") or event.data.get("rule") or "")
    if any(word in rule for word in CONSENT_RULES):
        return str(event.data.get("reason") or rule)
    if who is not None and who.role == "carer" and event.type in ("document.retrieved", "access.denied", "record.read"):
        return "a carer acting under the patient's grant"
    return None


def build(
    *,
    event_type: str,
    source: str,
    moment: datetime,
    who: Who | None,
    entities: list[str],
    orgs: list[str],
    patient: str | None,
    request_id: str | None,
    recorded: datetime,
    kind: Kind,
    custodian: str | None = None,
    query: str | None = None,
    outcome_desc: str | None = None,
    rule: str | None = None,
    document_type: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One BALP AuditEvent and its search fields (``rule``: the access-decision rule, kept for the
    patient's access report)."""
    disclosure = (
        event_type == "document.retrieved" and who is not None and custodian is not None and who.org != custodian
    )
    purpose = PATRQT if who is not None and who.role in ("patient", "carer") else kind.purpose
    # The LHCIE event type is always the second subtype, so a reader can rely on where it is.
    event_code = _coding(LHCIE_EVENTS, event_type)
    if disclosure:
        rtype = _coding(DCM, "110106", "Export")
        subtypes = [
            _coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event"),
            event_code,
            _coding(RESTFUL, kind.interaction),
        ]
        profile = "PrivacyDisclosure.Source"
    else:
        rtype = _coding(AUDIT_TYPE, "rest", "RESTful Operation")
        subtypes = [_coding(RESTFUL, kind.interaction), event_code]
        # BALP has no pattern for an operation: its records keep the basic shape (and the Query profile's
        # query entity when there is one).
        base = {
            "create": "Create",
            "read": "Read",
            "vread": "Read",
            "update": "Update",
            "delete": "Delete",
            "search": "Query",
            "operation": "Query",
        }[kind.interaction]
        profile = (
            ("Patient" + base if patient else base) if base != "Query" else ("PatientQuery" if patient else "Query")
        )
    entity = [_entity(ref) for ref in entities]
    if patient:
        entity.append(_patient_entity(patient))
    if query is not None:
        entity.append(_query_entity(query))
    if request_id:
        entity.append(_request_entity(request_id))
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "meta": {"profile": [PROFILE + profile]},
        "type": rtype,
        "subtype": subtypes,
        "action": kind.action,
        "period": {"start": moment.isoformat(), "end": moment.isoformat()},
        "recorded": recorded.isoformat(),
        "outcome": kind.outcome,
        "purposeOfEvent": _purpose(purpose),
        "agent": _agents(
            who,
            source,
            purpose,
            reading=kind.action in ("R", "E") and kind.interaction != "operation",
            custodian=custodian if disclosure else None,
        ),
        "source": {
            "site": "lhcie",
            "observer": {"display": source},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": entity,
    }
    if outcome_desc and kind.outcome != "0":
        resource["outcomeDesc"] = outcome_desc
    index = {
        "entities": entities,
        "orgs": orgs,
        "agent_orgs": [who.org] if who else [],
        "patient": patient,
        "types": _token_values([rtype]),
        "subtypes": _token_values(subtypes),
        "event_type": event_type,
        "outcome": kind.outcome,
        "action": kind.action,
        "date": index_date(recorded),
        "request_id": request_id,
    }
    if rule:
        index["rule"] = rule
    if document_type:
        # Kept beside the record so the patient's report can say "your discharge summary", not an id.
        index["document_type"] = document_type
    return resource, index


def consent_decision(
    *,
    event_type: str,
    source: str,
    who: Who,
    patient: str | None,
    basis: str,
    allowed: bool,
    request_id: str | None,
    recorded: datetime,
    entities: list[str],
    orgs: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """BALP Consent Authorized Decision: the decision itself, made on the strength of a consent."""
    subtypes = [
        _coding(AUTHZ, "AuthZ-Consent", "Authorization Decision using Roles and Consent"),
        _coding(LHCIE_EVENTS, event_type),
    ]
    rtype = _coding(DCM, "110113", "Security Alert")
    entity: list[dict[str, Any]] = []
    if patient:
        entity.append(_patient_entity(patient))
    entity.append({"what": {"display": basis}, "type": _coding(RESOURCE_TYPES, "Consent", "Consent")})
    entity += [_entity(ref) for ref in entities]
    if request_id:
        entity.append(_request_entity(request_id))
    agents = _agents(who, source, PATRQT, reading=True, custodian=None)
    agents.append(
        {
            "type": {"coding": [_coding(SECURITY_ROLE, "authserver", "authorization server")]},
            "who": {"display": source},
            "requestor": False,
        }
    )
    outcome = "0" if allowed else "4"
    resource = {
        "resourceType": "AuditEvent",
        "meta": {"profile": [PROFILE + "AuthZconsent"]},
        "type": rtype,
        "subtype": subtypes,
        "action": "E",
        "recorded": recorded.isoformat(),
        "outcome": outcome,
        "purposeOfEvent": _purpose(PATRQT),
        "agent": agents,
        "source": {
            "site": "lhcie",
            "observer": {"display": source},
            "type": [_coding(SOURCE_TYPE, "6", "Security Server")],
        },
        "entity": entity,
    }
    if not allowed:
        resource["outcomeDesc"] = basis
    index = {
        "entities": entities,
        "orgs": orgs,
        "agent_orgs": [who.org],
        "patient": patient,
        "types": _token_values([rtype]),
        "subtypes": _token_values(subtypes),
        "event_type": event_type,
        "outcome": outcome,
        "action": "E",
        "date": index_date(recorded),
        "request_id": request_id,
    }
    return resource, index


Record = tuple[str, dict[str, Any], dict[str, Any]]


def records_for(event: Event, *, recorded: datetime | None = None) -> list[Record]:
    """The records one event becomes: the consent decision (when there was one), then the event."""
    at = recorded or datetime.now(UTC)
    f = facts(event)
    kind = kind_of(event.type, event.data)
    reason = event.data.get("reason") or event.data.get("detail")
    rule = event.data.get("reason_code") or event.data.get("rule")
    resource, index = build(
        event_type=str(event.type),
        source=event.source,
        moment=event.time,
        who=f["who"],
        entities=f["entities"],
        orgs=f["orgs"],
        patient=f["patient"],
        request_id=event.correlationid,
        recorded=at,
        kind=kind,
        custodian=f["custodian"],
        outcome_desc=str(reason) if reason else None,
        query=event.data["query"] if isinstance(event.data.get("query"), str) else None,
        rule=str(rule) if rule else None,
        document_type=(event.data.get("document") or {}).get("type_display"),
    )
    records: list[Record] = []
    basis = consent_basis(event, f["who"])
    if basis is not None and f["who"] is not None:
        decision = consent_decision(
            event_type=str(event.type),
            source=event.source,
            who=f["who"],
            patient=f["patient"],
            basis=basis,
            allowed=kind.outcome == "0",
            request_id=event.correlationid,
            recorded=at,
            entities=f["entities"],
            orgs=f["orgs"],
        )
        records.append((event.id + CONSENT_SUFFIX, *decision))
    records.append((event.id, resource, index))
    return records


def to_audit_event(event: Event, *, recorded: datetime | None = None) -> dict[str, Any]:
    """The main AuditEvent of an event (without its consent decision record)."""
    return records_for(event, recorded=recorded)[-1][1]


def index_fields(event: Event) -> dict[str, Any]:
    return records_for(event)[-1][2]
