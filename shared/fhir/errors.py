"""Errors as FHIR OperationOutcome: domain code raises ``FhirError``; one middleware renders it.

Every error has a stable code from ``Code`` (the catalogue), an HTTP status and a FHIR issue type, so an
integrator can act on the code and a log search finds every occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

CODE_SYSTEM = "https://lhcie.london/fhir/CodeSystem/error-code"


class Code(Enum):
    # value: (http status, FHIR issue type, default diagnostics)
    MALFORMED_JSON = (400, "structure", "The request body is not valid JSON.")
    MALFORMED_REQUEST = (400, "structure", "The request is malformed.")
    INVALID_PARAMETER = (400, "value", "A search parameter is invalid.")
    UNAUTHORIZED = (401, "login", "A valid bearer token is required.")
    FORBIDDEN = (403, "forbidden", "The caller is not permitted to do this.")
    ACCESS_DENIED = (403, "forbidden", "Access to this resource is not permitted.")
    NOT_FOUND = (404, "not-found", "The resource does not exist or is not visible to the caller.")
    METHOD_NOT_ALLOWED = (405, "not-supported", "This method is not supported on this URL.")
    NOT_ACCEPTABLE = (406, "not-supported", "The requested representation cannot be served.")
    REQUEST_TIMEOUT = (408, "timeout", "The request body stopped arriving; send it again.")
    CONFLICT = (409, "conflict", "The request conflicts with the current state of the resource.")
    GONE = (410, "deleted", "The resource is no longer available.")
    PRECONDITION_FAILED = (412, "conflict", "The resource has changed since the version named in If-Match.")
    TOO_LARGE = (413, "too-large", "The request body is too large.")
    UNSUPPORTED_MEDIA_TYPE = (415, "not-supported", "The Content-Type is not supported.")
    RANGE_NOT_SATISFIABLE = (416, "value", "The requested byte range is outside the document.")
    INVALID_RESOURCE = (422, "invalid", "The resource is not valid.")
    INVALID_NHS_NUMBER = (422, "value", "The NHS number is not valid.")
    WRONG_ORGANISATION = (422, "business-rule", "The caller may only submit as its own organisation.")
    BUSINESS_RULE = (422, "business-rule", "A business rule was broken.")
    PROCESSING = (422, "processing", "The document could not be processed.")
    # MHD's error code for a FHIR document (Bundle.type = document) sent where a transaction is expected.
    FHIR_DOCUMENT_NOT_SUPPORTED = (
        422,
        "not-supported",
        "FHIRDocumentNotSupported: send the document as the "
        "Binary of a Provide Document Bundle (a transaction), not a document Bundle.",
    )
    RATE_LIMITED = (429, "throttled", "Too many requests; try again later.")
    INTERNAL = (500, "exception", "An unexpected error occurred.")
    UNAVAILABLE = (503, "transient", "A dependency is unavailable; try again later.")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def issue_type(self) -> str:
        return self.value[1]


@dataclass(frozen=True)
class Issue:
    code: Code
    diagnostics: str | None = None
    expression: str | None = None
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code.issue_type,
            "details": {"coding": [{"system": CODE_SYSTEM, "code": self.code.name}]},
            "diagnostics": self.diagnostics or self.code.value[2],
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


@dataclass
class FhirError(Exception):
    """Raise with one issue per problem; the status is the first issue's unless given."""

    issues: list[Issue]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.issues[0].code.name if self.issues else "error")
        if self.status is None:
            self.status = self.issues[0].code.status

    @classmethod
    def of(
        cls,
        code: Code,
        diagnostics: str | None = None,
        expression: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> FhirError:
        return cls([Issue(code, diagnostics, expression)], headers=headers or {})


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def informational(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": diagnostics}],
    }
