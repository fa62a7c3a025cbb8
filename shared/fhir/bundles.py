"""Search result Bundles and paging parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from shared.fhir.errors import Code, FhirError

DEFAULT_PAGE = 50
MAX_PAGE = 200


def page_params(query: Any) -> tuple[int, int]:
    """``_count`` and ``_offset`` from a query, validated (400 on nonsense)."""
    try:
        count = int(query.get("_count", DEFAULT_PAGE))
        offset = int(query.get("_offset", 0))
    except ValueError:
        raise FhirError.of(Code.INVALID_PARAMETER, "_count and _offset must be integers.") from None
    if not 1 <= count <= MAX_PAGE or offset < 0:
        raise FhirError.of(Code.INVALID_PARAMETER, f"_count must be 1..{MAX_PAGE} and _offset >= 0.")
    return count, offset


def searchset(
    path: str,
    query: dict[str, str],
    resources: list[dict[str, Any]],
    *,
    count: int,
    offset: int,
    has_more: bool,
) -> dict[str, Any]:
    def link(relation: str, at: int) -> dict[str, str]:
        params = {**query, "_count": str(count), "_offset": str(at)}
        return {"relation": relation, "url": f"{path}?{urlencode(params)}"}

    links = [link("self", offset)]
    if has_more:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(offset - count, 0)))
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
