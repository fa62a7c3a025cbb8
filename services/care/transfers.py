"""Repatriation: a FHIR Task from the tertiary centre (requester) to the patient's local trust (owner).

The states trauma and critical-care networks use, who moves a transfer into each, and the FHIR
Task.status each shows as (``businessStatus`` carries the finer state):

    requested -> consultant-identified -> accepted -> bed-confirmed -> fit-and-ready -> transport-booked
    -> transferred;  declined (with a reason) before acceptance;  cancelled by the sender at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.care.questionnaires import REPATRIATION, check_response, with_displays
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, SNOMED, identifier_value, valid_nhs_number

STATE_SYSTEM = "https://lhcie.london/fhir/CodeSystem/transfer-state"
NETWORK_URL = "https://lhcie.london/fhir/StructureDefinition/clinical-network"
WAITED_URL = "https://lhcie.london/fhir/StructureDefinition/hours-waited"
ESCALATED_URL = "https://lhcie.london/fhir/StructureDefinition/escalated"
TRANSFER_TYPE = "107724000"  # SNOMED: Patient transfer

SENDER, RECEIVER = "sender", "receiver"
# state: (Task.status, the party that moves a transfer into it, the states it may come from)
STATES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requested": ("requested", SENDER, ()),
    "consultant-identified": ("received", RECEIVER, ("requested",)),
    "accepted": ("accepted", RECEIVER, ("requested", "consultant-identified")),
    "bed-confirmed": ("in-progress", RECEIVER, ("accepted",)),
    "fit-and-ready": ("in-progress", SENDER, ("bed-confirmed",)),
    "transport-booked": ("in-progress", SENDER, ("fit-and-ready",)),
    "transferred": ("completed", SENDER, ("transport-booked",)),
    "declined": ("rejected", RECEIVER, ("requested", "consultant-identified")),
    "cancelled": (
        "cancelled",
        SENDER,
        ("requested", "consultant-identified", "accepted", "bed-confirmed", "fit-and-ready", "transport-booked"),
    ),
}
TERMINAL = frozenset({"transferred", "declined", "cancelled"})
PENDING = tuple(s for s in STATES if s not in TERMINAL)
# What a move must say: the accepting consultant, the bed, the transport, the reason for declining.
NEEDS = {
    "consultant-identified": "consultant",
    "bed-confirmed": "bed",
    "transport-booked": "transport",
    "declined": "reason",
    "cancelled": "reason",
}


@dataclass(frozen=True)
class TransferRequest:
    resource: dict[str, Any]
    patient: str
    receiver: str
    network: str | None


def check_request(data: dict[str, Any], sender: str) -> TransferRequest:
    if data.get("resourceType") != "Task":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Task resource.", "resourceType")
    issues: list[Issue] = []
    codes = [c for c in _list(_dict(data.get("code")).get("coding")) if isinstance(c, dict)]
    if not any(c.get("system") == SNOMED and c.get("code") == TRANSFER_TYPE for c in codes):
        issues.append(
            Issue(Code.INVALID_RESOURCE, f"code must be {SNOMED}|{TRANSFER_TYPE} (Patient transfer)", "Task.code")
        )
    if data.get("intent") != "order":
        issues.append(Issue(Code.INVALID_RESOURCE, "intent must be order", "Task.intent"))
    if data.get("status", "requested") != "requested":
        issues.append(Issue(Code.INVALID_RESOURCE, "a new transfer's status is requested", "Task.status"))
    patient = identifier_value(data.get("for"), NHS_NUMBER)
    if not valid_nhs_number(patient):
        issues.append(
            Issue(Code.INVALID_NHS_NUMBER, "for.identifier must be a valid NHS number", "Task.for.identifier")
        )
    requester = identifier_value(data.get("requester"), ODS_CODE)
    if requester not in (None, sender):
        issues.append(Issue(Code.WRONG_ORGANISATION, f"requester must be {sender}", "Task.requester"))
    receiver = identifier_value(data.get("owner"), ODS_CODE)
    if not receiver or receiver == sender:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "owner.identifier must be the receiving trust's ODS code",
                "Task.owner.identifier",
            )
        )
    contained = data.get("contained")
    form = contained[0] if isinstance(contained, list) and len(contained) == 1 else None
    if form is None:
        issues.append(Issue(Code.INVALID_RESOURCE, "contained must hold the repatriation form", "Task.contained"))
    else:
        issues += check_response(REPATRIATION, form, "Task.contained[0]", complete=True)
        ref = f"#{form.get('id')}" if isinstance(form, dict) else None
        if not any(
            isinstance(i, dict) and _dict(i.get("valueReference")).get("reference") == ref
            for i in _list(data.get("input"))
        ):
            issues.append(Issue(Code.INVALID_RESOURCE, f"input must reference the form ({ref})", "Task.input"))
    extensions = data.get("extension", [])
    if not isinstance(extensions, list) or not all(
        isinstance(e, dict) and isinstance(e.get("url"), str) for e in extensions
    ):
        issues.append(
            Issue(Code.INVALID_RESOURCE, "extension must be a list of extensions with a url", "Task.extension")
        )
    network = next(
        (
            str(e.get("valueString"))
            for e in _list(data.get("extension"))
            if isinstance(e, dict) and e.get("url") == NETWORK_URL and e.get("valueString")
        ),
        None,
    )
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    assert isinstance(patient, str) and isinstance(receiver, str)
    resource = {k: v for k, v in data.items() if k not in ("id", "meta", "status", "businessStatus")}
    resource["requester"] = {"identifier": {"system": ODS_CODE, "value": sender}}
    resource["contained"] = [with_displays(REPATRIATION, data["contained"][0])]
    return TransferRequest(resource, patient, receiver, network)


@dataclass(frozen=True)
class Move:
    state: str
    details: dict[str, str]


def check_move(parameters: dict[str, Any]) -> Move:
    """``$advance`` takes a Parameters resource: ``state`` (code) and the details that state needs."""
    if parameters.get("resourceType") != "Parameters":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Parameters resource.", "resourceType")
    values: dict[str, str] = {}
    for p in _list(parameters.get("parameter")):
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            value = p.get("valueCode", p.get("valueString"))
            if isinstance(value, str) and value.strip():
                values[p["name"]] = value.strip()[:500]
    state = values.pop("state", None)
    if state not in STATES or state == "requested":
        raise FhirError.of(
            Code.INVALID_RESOURCE,
            f"state must be one of {', '.join(list(STATES)[1:])}",
            "Parameters.parameter.where(name='state')",
        )
    needed = NEEDS.get(state)
    if needed and needed not in values:
        raise FhirError.of(
            Code.INVALID_RESOURCE, f"{state} needs a {needed}", f"Parameters.parameter.where(name='{needed}')"
        )
    return Move(state, values)


def allowed_from(state: str, move: Move, party: str) -> None:
    _task_status, mover, sources = STATES[move.state]
    if party != mover:
        raise FhirError.of(Code.FORBIDDEN, f"Only the {mover} moves a transfer to {move.state}.")
    if state not in sources:
        raise FhirError.of(Code.CONFLICT, f"A transfer that is {state} cannot become {move.state}.")


def task_view(row: dict[str, Any], hours_waited: float) -> dict[str, Any]:
    state = row["state"]
    resource = dict(row["resource"])
    resource.update(
        {
            "resourceType": "Task",
            "id": row["_id"],
            "meta": {"versionId": str(row["version"]), "lastUpdated": row["updated"]},
            "status": STATES[state][0],
            "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state}], "text": state.replace("-", " ")},
            "authoredOn": row["requested_at"],
            "lastModified": row["updated"],
        }
    )
    extensions = [e for e in resource.get("extension", []) if e.get("url") not in (WAITED_URL, ESCALATED_URL)]
    extensions.append({"url": WAITED_URL, "valueDecimal": hours_waited})
    if row.get("escalated"):
        extensions.append({"url": ESCALATED_URL, "valueBoolean": True})
    resource["extension"] = extensions
    notes = [
        {"time": h["at"], "text": f"{h['state']}: " + "; ".join(f"{k} {v}" for k, v in h["details"].items())}
        for h in row["history"]
        if h["details"]
    ]
    if notes:
        resource["note"] = notes
    if state in ("declined", "cancelled"):
        resource["statusReason"] = {"text": row["history"][-1]["details"].get("reason", "")}
    return resource


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
