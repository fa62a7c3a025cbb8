"""The audit service's own settings (``LHCIE_AUDIT_*``), read once where the app or the CLI is built."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_AUDIT_", extra="ignore", frozen=True)

    # Private key (PEM, Ed25519) that signs the chain's checkpoints; every audit replica needs the same
    # one. Unset: a key created on first use under <data_dir>/audit/ (the embedded run).
    signing_key_file: Path | None = None
    # A signed checkpoint of the chain's head every this many records.
    checkpoint_interval: int = Field(100, ge=1, le=1000)
