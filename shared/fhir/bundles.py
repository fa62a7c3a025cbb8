"""Search result Bundles and paging parameters."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from shared.fhir.errors import Code, FhirError

DEFAULT_PAGE = 50
MAX_PAGE = 200
# Deeper paging is a bulk export, not a search; SQLite (and BSON) integers end at 2**63 - 1 anyway.
MAX_OFFSET = 1_000_000


def page_params(query: Any) -> tuple[int, int]:
    """``_count`` and ``_offset`` from a query, validated (400 naming the parameter on nonsense)."""
    count = _integer(query, "_count", DEFAULT_PAGE)
    offset = _integer(query, "_offset", 0)
    if not 1 <= count <= MAX_PAGE:
        raise FhirError.of(Code.INVALID_PARAMETER, f"_count must be 1..{MAX_PAGE}.", "_count")
    if not 0 <= offset <= MAX_OFFSET:
        raise FhirError.of(Code.INVALID_PARAMETER, f"_offset must be 0..{MAX_OFFSET}.", "_offset")
    return count, offset


def _integer(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    # int() itself refuses more than 4,300 digits, with a ValueError: either way not a page position.
    if len(str(raw)) > 20:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be an integer.", name)
    try:
        return int(raw)
    except ValueError:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be an integer.", name) from None


def searchset(
    path: str,
    query: Mapping[str, str] | Sequence[tuple[str, str]],
    resources: list[dict[str, Any]],
    *,
    count: int,
    offset: int,
    has_more: bool,
    total: int | None = None,
    outcome: dict[str, Any] | None = None,
    base: str = "",
) -> dict[str, Any]:
    """A searchset Bundle. ``query``: the parameters the search used (repeats kept, paging left out);
    ``base``: the public base URL that makes ``fullUrl`` and the links absolute (FHIR wants them so);
    ``outcome``: an OperationOutcome about the search itself (``search.mode = outcome``)."""
    pairs = list(query.items()) if isinstance(query, Mapping) else list(query)
    pairs = [(k, v) for k, v in pairs if k not in ("_count", "_offset")]

    def link(relation: str, at: int) -> dict[str, str]:
        params = [*pairs, ("_count", str(count)), ("_offset", str(at))]
        return {"relation": relation, "url": f"{base}{path}?{urlencode(params)}"}

    links = [link("self", offset)]
    if has_more:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(offset - count, 0)))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    entries = [
        {
            "fullUrl": f"{base}/fhir/{r['resourceType']}/{r['id']}" if base else f"{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ]
    if outcome is not None:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": outcome, "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    return bundle
