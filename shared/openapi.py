"""The public HTTP API as an OpenAPI 3.1 document (served at /openapi.json).

``OPERATIONS`` is the description: every route of the app, and nothing else (tests/unit/test_openapi.py
compares it with the router). A body is named by what it is: a FHIR resource type, or one of ``BODIES``.
"""

from __future__ import annotations

import re
from typing import Any

FHIR_JSON = "application/fhir+json"

# (method, path, summary, request body): None for no body, a FHIR resource type, or a key of BODIES.
OPERATIONS: list[tuple[str, str, str, str | None]] = [
    ("GET", "/healthz", "Liveness", None),
    ("GET", "/readyz", "Readiness: every dependency reachable", None),
    ("GET", "/metrics", "Prometheus metrics", None),
    ("GET", "/fhir/metadata", "The CapabilityStatement", None),
    ("GET", "/.well-known/jwks.json", "The embedded issuer's public keys (test deployments)", None),
    ("GET", "/openapi.json", "This description", None),
    # intake
    ("POST", "/fhir", "ITI-65: a transaction Bundle of documents", "Bundle"),
    ("POST", "/fhir/DocumentReference", "Submit a document (inline base64, or multipart with the bytes)",
     "DocumentReference"),
    ("GET", "/fhir/DocumentReference", "ITI-67: search documents", None),
    ("POST", "/fhir/DocumentReference/_search", "ITI-67: search documents (form)", "form"),
    ("GET", "/fhir/DocumentReference/{id}", "Read a document's metadata", None),
    ("PATCH", "/fhir/DocumentReference/{id}", "Mark a document entered-in-error", "json-patch"),
    ("GET", "/fhir/_bundle/{id}", "The status of a bundle sent with Prefer: respond-async", None),
    ("GET", "/fhir/DocumentReference/{id}/_history", "A document reference's versions", None),
    ("GET", "/fhir/DocumentReference/{id}/_history/{vid}", "One version of a document reference (vread)", None),
    ("GET", "/fhir/List/{id}", "An ITI-65 SubmissionSet or an MHD Folder", None),
    ("GET", "/fhir/Patient/{id}", "The patient an ITI-65 bundle's Patient entry was matched to", None),
    ("GET", "/fhir/ValueSet/{id}", "The accepted document types", None),
    # storage
    ("GET", "/fhir/Binary/{id}", "ITI-68: a document's bytes (or a FHIR Binary)", None),
    # agreements
    ("GET", "/fhir/Organization", "Search organisations", None),
    ("POST", "/fhir/Organization", "Register an organisation", "Organization"),
    ("GET", "/fhir/Organization/$record-holders", "Who holds records about a patient", None),
    ("GET", "/fhir/Organization/{id}", "Read an organisation", None),
    ("PUT", "/fhir/Organization/{id}", "Update an organisation", "Organization"),
    ("GET", "/fhir/CareTeam", "Search MDTs", None),
    ("POST", "/fhir/CareTeam", "Register an MDT", "CareTeam"),
    ("GET", "/fhir/CareTeam/{id}", "Read an MDT", None),
    ("PUT", "/fhir/CareTeam/{id}", "Update an MDT", "CareTeam"),
    ("GET", "/fhir/Contract", "Search information sharing agreements", None),
    ("POST", "/fhir/Contract", "Propose an agreement", "Contract"),
    ("GET", "/fhir/Contract/$pending", "Agreements waiting on the caller", None),
    ("GET", "/fhir/Contract/$templates", "Template agreements", None),
    ("GET", "/fhir/Contract/$duplicates", "Overlapping agreements", None),
    ("POST", "/fhir/Contract/$merge", "Merge agreements", "Parameters"),
    ("GET", "/fhir/Contract/{id}", "Read an agreement", None),
    ("POST", "/fhir/Contract/{id}/$accept", "Accept an agreement", None),
    ("POST", "/fhir/Contract/{id}/$reject", "Reject an agreement", None),
    ("POST", "/fhir/Contract/{id}/$revoke", "Revoke an agreement", None),
    ("POST", "/fhir/Contract/{id}/$join", "Join a template agreement", None),
    ("POST", "/fhir/Contract/{id}/$approve-join", "Approve a request to join", "Parameters"),
    ("POST", "/fhir/Contract/{id}/$reject-join", "Refuse a request to join", "Parameters"),
    ("POST", "/fhir/Contract/{id}/$retire", "Retire an agreement for its replacement", "Parameters"),
    ("PUT", "/fhir/Contract/{id}/$document", "Attach the signed agreement", "pdf"),
    ("GET", "/fhir/Contract/{id}/$document", "The signed agreement", None),
    ("GET", "/fhir/Consent", "A patient's consents", None),
    ("GET", "/fhir/Consent/preferences", "A patient's sharing preferences", None),
    ("PUT", "/fhir/Consent/preferences", "Set a patient's sharing preferences", "Consent"),
    ("GET", "/fhir/RelatedPerson", "A patient's carers", None),
    ("POST", "/fhir/RelatedPerson", "Grant a carer access", "RelatedPerson"),
    ("POST", "/fhir/RelatedPerson/{id}/$revoke", "Revoke a carer's access", None),
    ("GET", "/dcc/", "The data controllers' console (HTML shell)", None),
    ("GET", "/patient/", "The patient's console (HTML shell)", None),
    ("GET", "/dcc/static/{filename}", "The DCC's scripts and styles", None),
    ("GET", "/patient/static/{filename}", "The patient page's scripts and styles", None),
    ("GET", "/dcc/static/vocabulary.json", "Purposes, document categories and organisation types in words", None),
    ("GET", "/patient/static/vocabulary.json", "Purposes, document categories and organisation types in words", None),
    # notification
    ("GET", "/fhir/Communication", "Alerts for an MDT", None),
    ("POST", "/fhir/Communication/{id}/$acknowledge", "Acknowledge an alert", None),
    ("POST", "/fhir/Communication/$reconcile", "Reconcile alerts with stored documents (operator)", None),
    ("GET", "/fhir/EpisodeOfCare", "Cancer pathways of an MDT", None),
    ("POST", "/fhir/EpisodeOfCare", "Register a pathway", "EpisodeOfCare"),
    ("GET", "/fhir/EpisodeOfCare/$tracking-list", "The patient tracking list (JSON or CSV)", None),
    ("GET", "/fhir/EpisodeOfCare/{id}", "Read a pathway", None),
    ("POST", "/fhir/EpisodeOfCare/{id}/$record-event", "Record a pathway event", "Parameters"),
    ("POST", "/fhir/EpisodeOfCare/{id}/$transfer", "Transfer a pathway to another MDT", "Parameters"),
    ("POST", "/fhir/Subscription", "Subscribe to MDT alerts or care plan changes", "Subscription"),
    ("GET", "/fhir/Subscription/{id}", "Read a subscription", None),
    ("GET", "/fhir/Subscription/{id}/$status", "A subscription's status", None),
    ("GET", "/fhir/Subscription/{id}/$events", "A subscription's recent events", None),
    ("GET", "/fhir/Subscription/{id}/$stream", "A care plan subscription's notifications (server-sent events)", None),
    ("POST", "/alerts/stream-token", "A short-lived token for the live alert stream", None),
    ("GET", "/alerts/stream", "The live alert stream (server-sent events)", None),
    ("GET", "/console/", "The MDT console (HTML shell)", None),
    ("GET", "/console/static/{filename}", "The consoles' scripts and styles", None),
    # audit
    ("GET", "/fhir/AuditEvent", "Search the audit trail", None),
    ("GET", "/fhir/AuditEvent/$verify", "Verify the audit chain", None),
    ("GET", "/fhir/AuditEvent/$export", "Export audit records", None),
    ("GET", "/fhir/AuditEvent/$access-report", "A patient's access report", None),
    # care
    ("POST", "/fhir/CarePlan", "Start or record an end-of-life care plan", "CarePlan"),
    ("GET", "/fhir/CarePlan", "A patient's current care plans", None),
    ("GET", "/fhir/CarePlan/{id}", "Read a care plan (current version)", None),
    ("PUT", "/fhir/CarePlan/{id}", "A new version of a care plan (If-Match)", "CarePlan"),
    ("GET", "/fhir/CarePlan/{id}/_history", "A care plan's versions", None),
    ("GET", "/fhir/CarePlan/{id}/_history/{vid}", "One version of a care plan", None),
    ("POST", "/fhir/Task", "Request a repatriation", "Task"),
    ("GET", "/fhir/Task", "A trust's pending transfers", None),
    ("GET", "/fhir/Task/{id}", "Read a repatriation", None),
    ("POST", "/fhir/Task/{id}/$advance", "Move a repatriation to its next state", "Parameters"),
    ("POST", "/fhir/Bundle", "Send a discharge summary (FHIR document)", "Bundle"),
    ("GET", "/fhir/Bundle", "Discharge summaries delivered to the caller", None),
    ("GET", "/fhir/Bundle/{id}", "Read a discharge summary", None),
    ("POST", "/fhir/Bundle/{id}/$acknowledge", "Acknowledge a discharge summary (ITK3)", "Parameters"),
    ("GET", "/fhir/Bundle/{id}/$status", "A discharge summary's acknowledgements", None),
    ("GET", "/fhir/Questionnaire", "The published forms", None),
    ("GET", "/fhir/Questionnaire/{id}", "Read a published form", None),
    ("GET", "/care/plan/", "The printable care plan view (HTML shell)", None),
    ("GET", "/care/transfers/", "The bed managers' transfers list (HTML shell)", None),
]

PUBLIC = {"/healthz", "/readyz", "/metrics", "/fhir/metadata", "/.well-known/jwks.json", "/openapi.json",
          "/console/", "/alerts/stream", "/dcc/", "/patient/", "/console/static/{filename}",
          "/care/plan/", "/care/transfers/", "/fhir/ValueSet/{id}",
          "/dcc/static/{filename}", "/patient/static/{filename}", "/dcc/static/vocabulary.json",
          "/patient/static/vocabulary.json"}

_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
BODIES: dict[str, dict[str, Any]] = {
    "form": {"application/x-www-form-urlencoded": {"schema": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}}},
    "json-patch": {"application/json-patch+json": {"schema": {"type": "array", "items": {
        "type": "object", "required": ["op", "path"],
        "properties": {"op": {"type": "string"}, "path": {"type": "string"}, "value": {}}}}}},
    "pdf": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
}


def _resource(resource_type: str) -> dict[str, Any]:
    return {FHIR_JSON: {"schema": {"type": "object", "required": ["resourceType"], "additionalProperties": True,
                                   "properties": {"resourceType": {"const": resource_type}}}}}


def _operation(method: str, path: str, summary: str, body: str | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
        "responses": {"default": {"description": "The answer, or an OperationOutcome explaining a refusal",
                                  "content": {FHIR_JSON: {"schema": _OUTCOME}}}},
    }
    names = re.findall(r"{(\w+)}", path)
    if names:
        operation["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                   for n in names]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": BODIES.get(body) or _resource(body)}
    if path in PUBLIC:
        operation["security"] = []
    return operation


def document(operations: list[tuple[str, str, str, str | None]] = OPERATIONS) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, body in operations:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, summary, body)
    return {
        "openapi": "3.1.0",
        "info": {"title": "LHCIE exchange", "version": "0.1.0",
                 "description": "The London Health & Care Information Exchange's public API (FHIR R4)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"OperationOutcome": {"type": "object", "required": ["resourceType"],
                                             "properties": {"resourceType": {"type": "string"}}}},
        },
    }


def canonical(path: str) -> str:
    """A router resource's canonical path as described here (the static folder serves files under it)."""
    return f"{path}/{{filename}}" if path in ("/console/static", "/dcc/static", "/patient/static") else path
