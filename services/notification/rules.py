"""Which priority an alert gets, by document type. Issue 6 turns this into a versioned rules file."""

from __future__ import annotations

from shared.events import DocumentFacts
from shared.fhir.identifiers import LOINC

# FHIR request priority: routine | urgent | asap | stat
PRIORITY_BY_TYPE: dict[tuple[str, str], str] = {
    (LOINC, "11526-1"): "urgent",  # Pathology study (histopathology report)
    (LOINC, "57133-1"): "urgent",  # Referral note
    (LOINC, "18842-5"): "routine",  # Discharge summary
}
DEFAULT_PRIORITY = "routine"


def priority_for(facts: DocumentFacts) -> str:
    return PRIORITY_BY_TYPE.get((facts.type_system or "", facts.type_code or ""), DEFAULT_PRIORITY)
