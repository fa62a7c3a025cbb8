"""Example resources: the demo data, the README's quickstart and the tests build on these."""

from __future__ import annotations

from typing import Any

from services.care.documents import DISCHARGE_TYPE, HEADING_SYSTEM, HEADINGS
from services.care.plans import CATEGORY_SYSTEM, END_OF_LIFE_CATEGORY, RECORD_TYPES
from services.care.questionnaires import END_OF_LIFE, OPTIONS_SYSTEM, REPATRIATION
from services.care.transfers import NETWORK_URL, TRANSFER_TYPE
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, SNOMED


def _text(link: str, value: str) -> dict[str, Any]:
    return {"linkId": link, "answer": [{"valueString": value}]}


def _code(link: str, code: str) -> dict[str, Any]:
    return {"linkId": link, "answer": [{"valueCoding": {"system": OPTIONS_SYSTEM, "code": code}}]}


def plan_form(*, cpr: str = "cpr-not-recommended", complete: bool = True) -> dict[str, Any]:
    items = [
        _code("cpr", cpr),
        _text(
            "emergency-recommendations",
            "Treat reversible causes (infection, pain). Avoid hospital admission "
            "unless symptoms cannot be controlled at home.",
        ),
        _code("preference", "comfort"),
        _text("if-deteriorates", "Call the hospice 24-hour advice line first; use the just-in-case medicines."),
        _text("preferred-place-of-care", "Home"),
        _text("preferred-place-of-death", "Home"),
        _text(
            "anticipatory-medicines",
            "Morphine sulfate 2.5-5 mg SC; midazolam 2.5-5 mg SC; levomepromazine; "
            "hyoscine butylbromide (in the home since 28 Nov).",
        ),
        _text("key-contacts", "Daughter (Sam, LPA) 07700 900123; St Christopher's Hospice 020 7946 0000"),
        _text("what-matters", "Being at home with family and the cat; being free of pain."),
    ]
    if complete:
        items += [
            _text("diagnosis", "Metastatic non-small-cell lung cancer; COPD."),
            _text("communication", "Hard of hearing: speak clearly on the left side."),
            _text(
                "advance-documents",
                "ADRT (refuses ventilation) and advance statement in the blue folder by the front door.",
            ),
            _text("capacity", "Has capacity for these decisions. LPA for health and welfare: daughter."),
            _text("involved", "The patient, her daughter, GP and palliative care CNS."),
            {
                "linkId": "clinician",
                "item": [
                    _text("name", "Dr A Clinician, consultant in palliative medicine"),
                    _text("registration", "GMC 7123456"),
                ],
            },
            {"linkId": "review-date", "answer": [{"valueDate": "2027-03-01"}]},
            _code("consent", "patient-consented"),
        ]
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "form",
        "questionnaire": END_OF_LIFE.url,
        "status": "completed" if complete else "in-progress",
        "item": items,
    }


def care_plan(
    patient: str, *, status: str = "active", record_type: str = "736373009", reason: str | None = None, **form: Any
) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "resourceType": "CarePlan",
        "status": status,
        "intent": "plan",
        "title": "End-of-life care plan",
        "category": [
            {
                "coding": [
                    {"system": CATEGORY_SYSTEM, "code": END_OF_LIFE_CATEGORY},
                    {"system": SNOMED, "code": record_type, "display": RECORD_TYPES[record_type]},
                ]
            }
        ],
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "supportingInfo": [{"reference": "#form"}],
        "contained": [plan_form(complete=status == "active", **form)],
    }
    if reason:
        plan["extension"] = [
            {"url": "https://lhcie.london/fhir/StructureDefinition/change-reason", "valueString": reason}
        ]
    return plan


def repatriation(patient: str, receiver: str, *, network: str | None = "south-london-trauma") -> dict[str, Any]:
    form = {
        "resourceType": "QuestionnaireResponse",
        "id": "form",
        "questionnaire": REPATRIATION.url,
        "status": "completed",
        "item": [
            _code("specialty", "major-trauma"),
            _text("reason-for-admission", "Fall from height: pelvic and femoral fractures."),
            _text("diagnosis", "Pelvic fracture (fixed), right femoral shaft fracture (nailed)."),
            _text("current-condition", "Stable; needs ward-level rehabilitation and physiotherapy."),
            _code("level-of-care", "level-0"),
            _code("infection-status", "none"),
            _text("mobility", "Hoist transfers; non-weight-bearing right leg."),
            _text("referring-consultant", "Ms B Surgeon, GMC 6123456"),
            {"linkId": "next-of-kin-informed", "answer": [{"valueBoolean": True}]},
        ],
    }
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": "urgent",
        "code": {"coding": [{"system": SNOMED, "code": TRANSFER_TYPE, "display": "Patient transfer"}]},
        "description": "Repatriation to local trust",
        "for": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "owner": {"identifier": {"system": ODS_CODE, "value": receiver}},
        "input": [{"type": {"text": "Repatriation form"}, "valueReference": {"reference": "#form"}}],
        "contained": [form],
    }
    if network:
        task["extension"] = [{"url": NETWORK_URL, "valueString": network}]
    return task


def _section(code: str, text: str, entry: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    section: dict[str, Any] = {
        "title": HEADINGS[code],
        "code": {"coding": [{"system": HEADING_SYSTEM, "code": code}]},
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'},
    }
    if entry:
        section["entry"] = entry
    return section


def discharge_summary(
    patient: str,
    *,
    identifier: str,
    gp: str,
    trust: str | None = None,
    replaces: str | None = None,
    leave_out: tuple[str, ...] = (),
) -> dict[str, Any]:
    sections = [
        _section("patient-demographics", "Ann Example, born 1950-01-01"),
        _section("gp-practice", "The Example Surgery", [{"identifier": {"system": ODS_CODE, "value": gp}}]),
        _section("allergies-and-adverse-reactions", "No known drug allergies"),
        _section("clinical-summary", "Admitted with a right MCA stroke; thrombolysed; good recovery."),
        _section("diagnoses", "Ischaemic stroke (right MCA territory)"),
        _section("person-completing-record", "Dr C Registrar, GMC 7654321"),
        _section("medications-and-medical-devices", "Clopidogrel 75 mg daily; atorvastatin 80 mg at night"),
        _section("plan-and-requested-actions", "GP: review blood pressure in two weeks."),
    ]
    if trust:
        sections.append(
            _section("distribution-list", "Local trust", [{"identifier": {"system": ODS_CODE, "value": trust}}])
        )
    sections = [s for s in sections if s["code"]["coding"][0]["code"] not in leave_out]
    composition: dict[str, Any] = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": SNOMED, "code": DISCHARGE_TYPE, "display": "Discharge summary"}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "date": "2026-12-01T10:00:00Z",
        "title": "Discharge summary",
        "author": [{"display": "Dr C Registrar"}],
        "section": sections,
    }
    if replaces:
        composition["relatesTo"] = [{"code": "replaces", "targetIdentifier": {"value": replaces}}]
    return {
        "resourceType": "Bundle",
        "type": "document",
        "timestamp": "2026-12-01T10:00:00Z",
        "identifier": {"system": "https://lhcie.london/Id/discharge-summary", "value": identifier},
        "entry": [{"fullUrl": "urn:uuid:composition", "resource": composition}],
    }
