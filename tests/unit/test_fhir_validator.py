"""The independent validator the MHD tests rely on does refuse invalid resources (so its silence means something)."""

from __future__ import annotations

from tests.fhir_validation import Validator, fhir_validator  # noqa: F401  (fixture)


def test_the_validator_refuses_what_r4_refuses(fhir_validator: Validator) -> None:
    assert fhir_validator.errors({"resourceType": "Bundle", "type": "collection", "total": 3}) != []  # bdl-1
    assert fhir_validator.errors({"resourceType": "DocumentReference", "status": "current"}) != []  # no content
    assert (
        fhir_validator.errors(
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "value", "diagnostics": "x"}]}
        )
        == []
    )
