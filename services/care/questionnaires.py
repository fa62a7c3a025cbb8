"""The published forms (FHIR Questionnaires) and the check of a QuestionnaireResponse against one.

Two forms: the end-of-life care plan (the ReSPECT form's sections and London's Universal Care Plan, in
the order an ambulance crew needs them at 3 a.m.) and the repatriation form trauma and critical-care
networks send with a transfer request. Items are kept small and typed; free text is allowed where the
paper forms have free text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.fhir.errors import Code, Issue

BASE = "https://lhcie.london/fhir/Questionnaire/"
OPTIONS_SYSTEM = "https://lhcie.london/fhir/CodeSystem/form-answer"


@dataclass(frozen=True)
class Item:
    link_id: str
    text: str
    type: str  # string | text | boolean | date | choice | group
    required: bool = False
    options: tuple[tuple[str, str], ...] = ()
    repeats: bool = False
    items: tuple[Item, ...] = field(default_factory=tuple)

    def to_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {"linkId": self.link_id, "text": self.text, "type": self.type, "required": self.required}
        if self.repeats:
            out["repeats"] = True
        if self.options:
            out["answerOption"] = [
                {"valueCoding": {"system": OPTIONS_SYSTEM, "code": c, "display": d}} for c, d in self.options
            ]
        if self.items:
            out["item"] = [i.to_fhir() for i in self.items]
        return out


@dataclass(frozen=True)
class Form:
    name: str
    title: str
    items: tuple[Item, ...]

    @property
    def url(self) -> str:
        return BASE + self.name

    def to_fhir(self) -> dict[str, Any]:
        return {
            "resourceType": "Questionnaire",
            "id": self.name,
            "url": self.url,
            "version": "1",
            "name": self.name.replace("-", "_"),
            "title": self.title,
            "status": "active",
            "date": "2026-12-01",
            "publisher": "LHCIE",
            "item": [i.to_fhir() for i in self.items],
        }


CPR = (("cpr-recommended", "CPR attempts recommended"), ("cpr-not-recommended", "CPR attempts NOT recommended"))
PREFERENCE = (
    ("sustain-life", "Prioritise sustaining life, even at the expense of some comfort"),
    ("balance", "A balance between sustaining life and comfort"),
    ("comfort", "Prioritise comfort, even at the expense of sustaining life"),
)
CONSENT = (
    ("patient-consented", "The person consented to this plan and to sharing it"),
    ("best-interests", "Made in the person's best interests (they lack capacity for this decision)"),
    ("representative-consented", "Agreed with their lasting power of attorney for health and welfare"),
)

END_OF_LIFE = Form(
    "end-of-life-care-plan",
    "End-of-life care plan (ReSPECT / Universal Care Plan)",
    (
        # The crew's questions first: resuscitation, what to do now, where the person wants to be.
        Item("cpr", "CPR recommendation", "choice", True, CPR),
        Item("emergency-recommendations", "Clinical recommendations for emergency care and treatment", "text", True),
        Item("preference", "Preference: sustaining life or comfort", "choice", True, PREFERENCE),
        Item("if-deteriorates", "What to do if the person deteriorates", "text", True),
        Item("preferred-place-of-care", "Preferred place of care", "string"),
        Item("preferred-place-of-death", "Preferred place of death", "string"),
        Item("anticipatory-medicines", "Anticipatory medicines (just in case)", "text"),
        Item("key-contacts", "Key contacts", "text", True),
        Item("what-matters", "What matters to the person", "text", True),
        Item("diagnosis", "Diagnosis and relevant condition", "text", True),
        Item("communication", "Communication needs", "text"),
        Item("advance-documents", "Where advance statements, ADRT and advance care plans are kept", "text"),
        Item("capacity", "Capacity and representation (lasting power of attorney)", "text"),
        Item("involved", "Who was involved in making this plan", "text", True),
        Item(
            "clinician",
            "Clinicians completing the plan",
            "group",
            True,
            repeats=True,
            items=(
                Item("name", "Name and role", "string", True),
                Item("registration", "Professional registration number (GMC, NMC, HCPC)", "string", True),
            ),
        ),
        Item("review-date", "Review date", "date", True),
        Item("consent", "Consent and sharing", "choice", True, CONSENT),
    ),
)

SPECIALTIES = (
    ("stroke", "Stroke"),
    ("major-trauma", "Major trauma"),
    ("cardiology", "Cardiology"),
    ("neurology", "Neurology"),
    ("other", "Other"),
)
REPATRIATION = Form(
    "repatriation",
    "Repatriation request (tertiary centre to local trust)",
    (
        Item("specialty", "Specialty", "choice", True, SPECIALTIES),
        Item("reason-for-admission", "Reason for admission", "text", True),
        Item("diagnosis", "Diagnosis and procedures", "text", True),
        Item("current-condition", "Current condition and ongoing care needs", "text", True),
        Item(
            "level-of-care",
            "Level of care",
            "choice",
            True,
            (
                ("level-0", "Level 0 (ward)"),
                ("level-1", "Level 1 (enhanced)"),
                ("level-2", "Level 2 (HDU)"),
                ("level-3", "Level 3 (ICU)"),
            ),
        ),
        Item(
            "infection-status",
            "Infection status",
            "choice",
            True,
            (
                ("none", "None known"),
                ("mrsa", "MRSA"),
                ("cpe", "CPE"),
                ("c-diff", "C. difficile"),
                ("covid-19", "COVID-19"),
                ("other", "Other"),
            ),
        ),
        Item("mobility", "Mobility", "text"),
        Item("referring-consultant", "Referring consultant (name and GMC number)", "string", True),
        Item("next-of-kin-informed", "Next of kin informed", "boolean", True),
    ),
)

FORMS = {f.name: f for f in (END_OF_LIFE, REPATRIATION)}
_VALUE = {
    "string": "valueString",
    "text": "valueString",
    "boolean": "valueBoolean",
    "date": "valueDate",
    "choice": "valueCoding",
}


def check_response(form: Form, response: Any, where: str, *, complete: bool) -> list[Issue]:
    """Problems of ``response`` against ``form``; required items are checked only when ``complete``."""
    if not isinstance(response, dict) or response.get("resourceType") != "QuestionnaireResponse":
        return [Issue(Code.INVALID_RESOURCE, "The form must be a QuestionnaireResponse.", where)]
    issues = []
    if response.get("questionnaire") != form.url:
        issues.append(Issue(Code.INVALID_RESOURCE, f"questionnaire must be {form.url}", f"{where}.questionnaire"))
    return issues + _check_items(form.items, response.get("item", []), where, complete)


def _check_items(items: tuple[Item, ...], given: Any, where: str, complete: bool) -> list[Issue]:
    if not isinstance(given, list):
        return [Issue(Code.INVALID_RESOURCE, "item must be a list", f"{where}.item")]
    issues: list[Issue] = []
    known = {i.link_id: i for i in items}
    seen: dict[str, int] = {}
    for answer in given:
        link = answer.get("linkId") if isinstance(answer, dict) else None
        here = f"{where}.item.where(linkId='{link}')"
        item = known.get(link) if isinstance(link, str) else None
        if item is None:
            issues.append(Issue(Code.INVALID_RESOURCE, f"unknown item {link!r}", f"{where}.item"))
            continue
        seen[item.link_id] = seen.get(item.link_id, 0) + 1
        if seen[item.link_id] > 1 and not item.repeats:
            issues.append(Issue(Code.INVALID_RESOURCE, "this item does not repeat", here))
        if item.type == "group":
            issues += _check_items(item.items, answer.get("item", []), here, complete)
        else:
            issues += _check_answer(item, answer.get("answer"), here)
    if complete:
        for item in items:
            if item.required and item.link_id not in seen:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE, f"{item.text}: required", f"{where}.item.where(linkId='{item.link_id}')"
                    )
                )
    return issues


def _check_answer(item: Item, answers: Any, here: str) -> list[Issue]:
    if not isinstance(answers, list) or len(answers) != 1 or not isinstance(answers[0], dict):
        return [Issue(Code.INVALID_RESOURCE, "exactly one answer is expected", f"{here}.answer")]
    key = _VALUE[item.type]
    value = answers[0].get(key)
    if item.type == "choice":
        code = value.get("code") if isinstance(value, dict) else None
        if not isinstance(code, str) or code not in {c for c, _ in item.options}:
            return [
                Issue(
                    Code.INVALID_RESOURCE,
                    f"must be one of {', '.join(c for c, _ in item.options)}",
                    f"{here}.answer.{key}",
                )
            ]
    elif item.type == "boolean":
        if not isinstance(value, bool):
            return [Issue(Code.INVALID_RESOURCE, "must be true or false", f"{here}.answer.{key}")]
    elif not isinstance(value, str) or not value.strip():
        return [Issue(Code.INVALID_RESOURCE, f"a non-empty {key} is expected", f"{here}.answer.{key}")]
    elif item.type == "date" and not _is_date(value):
        return [Issue(Code.INVALID_RESOURCE, "must be a date (YYYY-MM-DD)", f"{here}.answer.{key}")]
    return []


def _is_date(value: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def answer(response: dict[str, Any], link_id: str) -> Any:
    """The first answer's value of a top-level item (code for a choice), or None."""
    for item in response.get("item", []):
        if item.get("linkId") == link_id and item.get("answer"):
            value = next(iter(item["answer"][0].values()), None)
            return value.get("code") if isinstance(value, dict) else value
    return None


def with_displays(form: Form, response: dict[str, Any]) -> dict[str, Any]:
    """The response with each chosen answer's display filled in from the form (a reader needs no lookup)."""
    return {**response, "item": _displayed(form.items, response.get("item", []))}


def _displayed(items: tuple[Item, ...], given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    known = {i.link_id: i for i in items}
    out = []
    for answer in given:
        item = known[answer["linkId"]]
        if item.type == "group":
            answer = {**answer, "item": _displayed(item.items, answer.get("item", []))}
        elif item.type == "choice":
            coding = answer["answer"][0]["valueCoding"]
            display = dict(item.options)[coding["code"]]
            answer = {
                **answer,
                "answer": [{"valueCoding": {"system": OPTIONS_SYSTEM, "code": coding["code"], "display": display}}],
            }
        out.append(answer)
    return out
