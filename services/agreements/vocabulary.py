"""The agreements service's FHIR vocabulary: its code systems and extensions, the words a data controller
or a patient reads for its codes, and the two helpers every resource mapping uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.events import AgreementStatus
from shared.fhir.errors import Code, Issue
from shared.fhir.identifiers import ODS_CODE

# ISA lifecycle -> FHIR Contract.status (http://hl7.org/fhir/contract-status)
CONTRACT_STATUS = {
    AgreementStatus.PROPOSED: "offered",
    AgreementStatus.ACCEPTED: "executed",
    AgreementStatus.REJECTED: "rejected",
    AgreementStatus.REVOKED: "revoked",
    AgreementStatus.EXPIRED: "terminated",
}
BASE = "https://lhcie.london/fhir"
PURPOSE_SYSTEM = f"{BASE}/CodeSystem/sharing-purpose"
CATEGORY_SYSTEM = f"{BASE}/CodeSystem/document-category"
ORG_TYPE_SYSTEM = f"{BASE}/CodeSystem/organisation-type"
TEMPLATE_EXTENSION = f"{BASE}/StructureDefinition/template-agreement"
# Why no request could ever be admitted under this ISA (shared.policy.never_applies): the DCC warns on it.
NEVER_APPLIES_EXTENSION = f"{BASE}/StructureDefinition/never-applies"
# A template that admits any organisation of this type without its owner's approval (said in advance).
ADMITS_EXTENSION = f"{BASE}/StructureDefinition/template-admits-organisation-type"
# An organisation waiting for the template's owner to approve its joining.
JOIN_REQUEST_EXTENSION = f"{BASE}/StructureDefinition/join-request"
CARER_SUBJECT_SYSTEM = f"{BASE}/Id/login-subject"
ORGANISATION_KINDS = ("acute-trust", "gp-practice", "mental-health", "community", "social-care", "hospice")
PURPOSE_LABELS = {
    "direct-care": "direct care (all sub-purposes)",
    "cancer-care": "cancer care",
    "end-of-life-care": "end-of-life care",
    "transfer-of-care": "transfer of care",
}
# Document categories (shared.policy.CATEGORIES) in the words a data controller or a patient uses.
CATEGORY_LABELS = {
    "care-plan": "care plans",
    "clinic-letter": "clinic letters",
    "discharge-summary": "discharge summaries",
    "end-of-life-care": "end-of-life care records",
    "imaging": "imaging reports (X-ray, CT, MRI)",
    "pathology": "test results (pathology)",
    "referral": "referral letters",
    "transfer-of-care": "transfer of care records",
    "other": "other documents",
}
ORGANISATION_KIND_LABELS = {
    "acute-trust": "hospital trust",
    "gp-practice": "GP practice",
    "mental-health": "mental health trust",
    "community": "community health service",
    "social-care": "social care provider",
    "hospice": "hospice",
}
DECISION_EXTENSION = f"{BASE}/StructureDefinition/agreement-decision"
ATTACHED_BY_EXTENSION = f"{BASE}/StructureDefinition/attached-by"


def category_label(code: str) -> str:
    return CATEGORY_LABELS.get(code, code.replace("-", " "))


def ods_reference(code: str) -> dict[str, Any]:
    return {"reference": f"Organization/{code}", "identifier": {"system": ODS_CODE, "value": code}}


def parse_date(value: Any, where: str, issues: list[Issue]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        issues.append(Issue(Code.INVALID_RESOURCE, "must be an ISO 8601 date-time with a time zone", where))
        return None
    if parsed.tzinfo is None:
        issues.append(Issue(Code.INVALID_RESOURCE, "must carry a time zone", where))
        return None
    return parsed
