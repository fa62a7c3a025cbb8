"""Settings shared by every service: one set of ``LHCIE_*`` variables (ARCHITECTURE.md, Configuration).

Settings are read once at start-up and validated there, so a wrong value stops the process before it
serves a request.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusKind(StrEnum):
    MEMORY = "memory"
    AMQP = "amqp"


class ObjectStoreKind(StrEnum):
    FS = "fs"
    S3 = "s3"


class DocStoreKind(StrEnum):
    SQLITE = "sqlite"
    MONGODB = "mongodb"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path(".lhcie")

    bus: BusKind = BusKind.MEMORY
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_prefetch: int = Field(32, ge=1)
    amqp_delivery_limit: int = Field(5, ge=1)

    object_store: ObjectStoreKind = ObjectStoreKind.FS
    s3_endpoint_url: str | None = None
    s3_bucket: str = "lhcie-documents"
    s3_region: str = "eu-west-2"

    doc_store: DocStoreKind = DocStoreKind.SQLITE
    mongodb_url: SecretStr | None = None

    jwks_url: str | None = None
    jwt_issuer: str = "lhcie-embedded"
    jwt_audience: str = "lhcie"

    # Load the demo organisations, MDTs and ISAs into an empty agreements store (``lhcie run`` does).
    demo: bool = False

    # Largest request body intake accepts inline (base64 JSON); larger documents use the streamed form.
    max_inline_bytes: int = Field(10 * 1024 * 1024, ge=1024)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def service_db_path(self, service: str) -> Path:
        return self.data_dir / f"{service}.sqlite3"


def load_settings(**defaults: object) -> Settings:
    """Read settings from the environment; ``defaults`` replace the built-in defaults only.

    ``lhcie serve`` defaults to the real adapters and ``lhcie run`` to the embedded ones, but an
    explicit ``LHCIE_*`` variable always wins.
    """
    from_env = Settings()
    unset = {k: v for k, v in defaults.items() if k not in from_env.model_fields_set}
    return Settings(**{**from_env.model_dump(include=from_env.model_fields_set), **unset})
