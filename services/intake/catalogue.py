"""The document types intake accepts and the media types each may carry (a YAML file, validated at start)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_FILE = Path(__file__).with_name("document_types.yaml")


class DocumentType(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str
    code: str
    display: str
    category: str
    media: tuple[str, ...] = Field(min_length=1)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    media_types: dict[str, tuple[str, ...]] = {}
    types: tuple[DocumentType, ...] = Field(min_length=1)

    def find(self, system: str | None, code: str | None) -> DocumentType | None:
        for entry in self.types:
            if entry.system == system and entry.code == code:
                return entry
        return None


def load(path: Path | None = None) -> Catalogue:
    """Raises ``pydantic.ValidationError`` or ``yaml.YAMLError``: a bad file stops the start-up."""
    return Catalogue.model_validate(yaml.safe_load((path or DEFAULT_FILE).read_text()))


VALUE_SET_ID = "lhcie-document-types"


def value_set(catalogue: Catalogue) -> dict[str, object]:
    """The accepted document types as the FHIR ValueSet a source can check against (and the 422 names)."""
    systems: dict[str, list[dict[str, str]]] = {}
    for entry in catalogue.types:
        systems.setdefault(entry.system, []).append({"code": entry.code, "display": entry.display})
    return {
        "resourceType": "ValueSet",
        "id": VALUE_SET_ID,
        "url": f"https://lhcie.london/fhir/ValueSet/{VALUE_SET_ID}",
        "version": str(catalogue.version),
        "name": "LHCIEDocumentTypes",
        "title": "Document types the LHCIE exchange accepts",
        "status": "active",
        "compose": {"include": [{"system": system, "concept": concepts} for system, concepts in systems.items()]},
    }
