"""The intake service's own settings, read once where its app is built (or by ``lhcie types``).

Their variables keep the names they always had (``LHCIE_INTAKE_DOCUMENT_TYPES``, ``LHCIE_RATE_LIMIT_*``...);
the request-body limits every process enforces at its edge stay in ``shared/config.py``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_", extra="ignore", frozen=True)

    # The accepted document types (YAML; default: services/intake/document_types.yaml), the largest
    # streamed (multipart) document, and the submission rate per organisation and process.
    intake_document_types: Path | None = None
    max_document_bytes: int = Field(5 * 1024**3, ge=1024)
    rate_limit_per_minute: int = Field(1200, ge=1)
    rate_limit_burst: int = Field(200, ge=1)
    # At most this many uploads run at once per organisation (eight times as many small ones: limits.py).
    max_concurrent_uploads_per_org: int = Field(8, ge=1)
