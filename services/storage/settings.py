"""The storage service's own settings, read once where the app or ``lhcie storage init`` is built.

Their variables keep the names they always had (``LHCIE_RETENTION_*``, ``LHCIE_BINARY_REDIRECT``...); the
object store they act on is the process's (``shared/config.py``: ``LHCIE_S3_*``, the staging expiry).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_", extra="ignore", frozen=True)

    # Object-lock retention of stored documents (when the bucket has object lock): the mode, a default
    # period, and periods per document type code (LOINC), e.g. LHCIE_RETENTION_DAYS_BY_TYPE='{"11526-1": 10957}'.
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE", "off"] = "GOVERNANCE"
    retention_default_days: int = Field(2922, ge=1)
    retention_days_by_type: dict[str, int] = Field(default_factory=dict)
    # GET /fhir/Binary/{id} answers with a redirect to a presigned URL valid this long, when enabled.
    binary_redirect: bool = False
    presign_ttl_seconds: int = Field(60, ge=1, le=3600)
    # Optional content scanner, "module:factory" (factory(settings) -> ContentScanner); none by default.
    content_scanner: str | None = None
