"""JSON from an untrusted body, bounded in nesting: a deep body would otherwise exhaust the recursion limit
of the parser, of pydantic, or of json.dumps long after the request was accepted."""

from __future__ import annotations

import json
from typing import Any

from shared.fhir.errors import Code, FhirError

# FHIR resources nest a dozen levels or so; a hundred leaves room for extensions inside extensions.
MAX_DEPTH = 100


class TooDeep(ValueError):
    pass


def loads_bounded(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``TooDeep`` for nesting) instead of ``RecursionError``."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise TooDeep(f"nested deeper than {max_depth} levels") from None
    if depth_exceeds(data, max_depth):
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return data


def depth_exceeds(data: Any, max_depth: int) -> bool:
    """Iterative, so it cannot itself run out of stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_body(raw: bytes | str, *, what: str = "The request body") -> Any:
    """JSON from a request body or part: 400 ``MALFORMED_JSON`` for bad or too deeply nested JSON."""
    try:
        return loads_bounded(raw)
    except TooDeep:
        raise FhirError.of(Code.MALFORMED_JSON, f"{what} is nested more than {MAX_DEPTH} levels deep.") from None
    except (ValueError, UnicodeDecodeError):
        raise FhirError.of(
            Code.MALFORMED_JSON, None if what == "The request body" else f"{what} is not valid JSON."
        ) from None
