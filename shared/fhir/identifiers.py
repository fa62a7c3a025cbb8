"""Identifier systems used in England, and the small helpers around them."""

from __future__ import annotations

from typing import Any

from nhs_number.validate import is_valid

NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def valid_nhs_number(value: object) -> bool:
    return isinstance(value, str) and len(value) == 10 and value.isdigit() and bool(is_valid(value))


def identifier_value(reference: Any, system: str) -> str | None:
    """The value of ``reference.identifier`` when it is in ``system``."""
    if not isinstance(reference, dict):
        return None
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") == system:
        value = identifier.get("value")
        return value if isinstance(value, str) else None
    return None


def parse_token(value: str) -> tuple[str | None, str]:
    """A FHIR token search value, ``system|code`` or ``code``."""
    system, bar, code = value.partition("|")
    return (system or None, code) if bar else (None, value)
