"""Can the caller take what we have? ITI-68 serves the document's own media type, or a FHIR Binary."""

from __future__ import annotations

FHIR_BINARY = "application/fhir+json"


def acceptable(accept: str | None, content_type: str) -> bool:
    """Whether an Accept header admits the document's media type or a FHIR Binary (q=0 excludes)."""
    if not accept or not accept.strip():
        return True
    media = content_type.split(";")[0].strip().lower()
    major = media.split("/")[0]
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        wanted = parts[0].lower()
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in parts[1:]):
            continue
        if wanted in ("*/*", media, f"{major}/*", FHIR_BINARY):
            return True
    return False
