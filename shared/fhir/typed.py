"""A request body checked against its typed FHIR model (fhir.resources, pydantic) before any code reads it:
a wrong type anywhere is a 422 naming the field, never an AttributeError deep inside a handler."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.fhir.errors import Code, FhirError, Issue

MAX_ISSUES = 20  # a body wrong everywhere gets a useful answer, not a megabyte of issues


def expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    """pydantic's error location as a FHIRPath: ('name', 0, 'text') -> Organization.name[0].text."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and part != "root":  # "root": a pydantic RootModel
            path += f".{part}"
        # anything else (a union branch, a validator name) is pydantic's bookkeeping, not a field
    return path


def validated(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` unchanged when ``model`` accepts it; else ``FhirError`` (422) with one issue per bad field."""
    resource_type = str(data.get("resourceType") or model.__name__)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        # Only types are judged here: what a use case requires (and what it takes from the token instead,
        # such as a carer grant's patient) is for its own parser, which reports every missing field at once.
        wrong = [e for e in exc.errors(include_url=False, include_input=False) if e.get("type") != "missing"]
        issues = [
            Issue(Code.INVALID_RESOURCE, _message(error), expression(resource_type, tuple(error["loc"])))
            for error in wrong[:MAX_ISSUES]
        ]
        if issues:
            raise FhirError(issues, status=422) from None
    except (TypeError, ValueError, RecursionError):  # a validator of the model itself tripped on the input
        raise FhirError.of(Code.INVALID_RESOURCE, f"The body is not a valid {resource_type}.", resource_type) from None
    return data


def _message(error: Any) -> str:
    # pydantic's message, without the value sent (it may be a patient's details).
    return str(error.get("msg", "invalid value"))[:200]
