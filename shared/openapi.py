"""The public HTTP API as an OpenAPI 3.1 document (served at /openapi.json).

Each service declares its own operations (``ServiceSpec.operations``, in its ``app.py``); ``EDGE`` holds the
routes every process serves. A process describes exactly the operations of what it serves, and
tests/unit/test_openapi.py holds that equal to its router. A body is named by what it is: a FHIR resource
type, or one of ``BODIES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

FHIR_JSON = "application/fhir+json"


class Operation(NamedTuple):
    """One route as described: a request body is None, a FHIR resource type, or a key of ``BODIES``;
    ``public`` when it needs no token (the edge's own list of open paths is the service spec's)."""

    method: str
    path: str
    summary: str
    body: str | None = None
    public: bool = False


# What every process serves beside its services (shared/edge.py).
EDGE: tuple[Operation, ...] = (
    Operation("GET", "/healthz", "Liveness", public=True),
    Operation("GET", "/readyz", "Readiness: every dependency reachable", public=True),
    Operation("GET", "/metrics", "Prometheus metrics", public=True),
    Operation("GET", "/fhir/metadata", "The CapabilityStatement", public=True),
    Operation("GET", "/.well-known/jwks.json", "The embedded issuer's public keys (test deployments)", public=True),
    Operation("GET", "/openapi.json", "This description", public=True),
)

_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
BODIES: dict[str, dict[str, Any]] = {
    "form": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
    },
    "json-patch": {
        "application/json-patch+json": {
            "schema": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["op", "path"],
                    "properties": {"op": {"type": "string"}, "path": {"type": "string"}, "value": {}},
                },
            }
        }
    },
    "pdf": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
}


def _resource(resource_type: str) -> dict[str, Any]:
    return {
        FHIR_JSON: {
            "schema": {
                "type": "object",
                "required": ["resourceType"],
                "additionalProperties": True,
                "properties": {"resourceType": {"const": resource_type}},
            }
        }
    }


def _operation(op: Operation) -> dict[str, Any]:
    method, path, body = op.method, op.path, op.body
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
        "responses": {
            "default": {
                "description": "The answer, or an OperationOutcome explaining a refusal",
                "content": {FHIR_JSON: {"schema": _OUTCOME}},
            }
        },
    }
    names = re.findall(r"{(\w+)}", path)
    if names:
        operation["parameters"] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": BODIES.get(body) or _resource(body)}
    if op.public:
        operation["security"] = []
    return operation


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LHCIE exchange",
            "version": "0.1.0",
            "description": "The London Health & Care Information Exchange's public API (FHIR R4).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "OperationOutcome": {
                    "type": "object",
                    "required": ["resourceType"],
                    "properties": {"resourceType": {"type": "string"}},
                }
            },
        },
    }


def canonical(path: str, *, static: bool = False) -> str:
    """A router resource's canonical path as described here (a static folder serves files under it)."""
    return f"{path}/{{filename}}" if static else path
