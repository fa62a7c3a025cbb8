"""How long a filed document is kept: object-lock retention per document type, from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.storage.settings import StorageSettings
from shared.events import DocumentFacts


@dataclass(frozen=True)
class Retention:
    mode: str  # GOVERNANCE (privileged users may shorten it) or COMPLIANCE (nobody can)
    until: datetime


def retention_for(settings: StorageSettings, facts: DocumentFacts, now: datetime) -> Retention | None:
    """The retention to lock ``facts``' object with, or None when retention is off."""
    if settings.retention_mode == "off":
        return None
    days = settings.retention_days_by_type.get(facts.type_code or "", settings.retention_default_days)
    return Retention(settings.retention_mode, now + timedelta(days=days))
