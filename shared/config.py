"""Settings shared by every service: one set of ``LHCIE_*`` variables (docs/architecture.md, Configuration).

Settings are read once at start-up and validated there, so a wrong value stops the process before it
serves a request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BusKind(StrEnum):
    MEMORY = "memory"
    AMQP = "amqp"
    SQLITE = "sqlite"


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
    # MinIO and most self-hosted S3 servers want path-style URLs (http://host/bucket/key).
    s3_path_style: bool = False
    # Server-side encryption requested on every write: SSE-S3 ("AES256") or SSE-KMS ("aws:kms").
    s3_sse: Literal["AES256", "aws:kms"] = "AES256"
    s3_kms_key_id: str | None = None
    # Short timeouts and few retries: an unreachable store must surface as 503 / a bus retry quickly.
    s3_connect_timeout: float = Field(2.0, gt=0)
    s3_read_timeout: float = Field(10.0, gt=0)
    s3_max_attempts: int = Field(3, ge=1)
    # Objects larger than one part go up as a multipart upload (S3's minimum part is 5 MiB).
    s3_part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Staged uploads never claimed by storage are expired by the bucket's lifecycle rule after this.
    staging_expiry_days: int = Field(7, ge=1)
    # Storage's own settings (retention, the Binary redirect, the content scanner) are in
    # services/storage/settings.py.

    doc_store: DocStoreKind = DocStoreKind.SQLITE
    mongodb_url: SecretStr | None = None

    jwks_url: str | None = None
    jwt_issuer: str = "lhcie-embedded"
    jwt_audience: str = "lhcie"
    # The embedded token issuer (a signing key in the data directory, ``lhcie token``): on for ``lhcie run``;
    # a served service without LHCIE_JWKS_URL refuses to start unless this is set explicitly.
    embedded_issuer: bool = False
    # The longest validity (exp - iat) of an accepted token; longer-lived tokens are refused (401).
    jwt_max_lifetime_seconds: int = Field(24 * 3600, ge=60)
    # How long a fetched JWKS is used before it is read again (an unknown key id re-reads it sooner).
    jwks_cache_seconds: int = Field(300, ge=30)

    # The audit service's own settings (LHCIE_AUDIT_*) are in services/audit/settings.py.

    # Load the demo organisations, MDTs and ISAs into an empty agreements store (``lhcie run`` does).
    demo: bool = False

    # Intake's own settings (document types, the largest document, rate limits, concurrent uploads) are
    # in services/intake/settings.py.

    # Largest request body intake accepts inline (base64 JSON); larger documents use the streamed form.
    max_inline_bytes: int = Field(10 * 1024 * 1024, ge=1024)

    # Slow and stalled clients: a connection whose request headers are not complete within this time (or
    # that sends nothing between requests for as long) is closed; a body that stops arriving for
    # http_body_idle_seconds is answered 408.
    http_header_timeout_seconds: float = Field(15.0, gt=0)
    http_body_idle_seconds: float = Field(30.0, gt=0)

    # Stopping (SIGTERM): how long in-flight requests and messages get to finish; what is still running
    # then is cut off, its messages left unacknowledged for redelivery. Kubernetes' grace period must
    # exceed it plus the preStop pause (the chart checks).
    drain_seconds: float = Field(20.0, gt=0, le=600)

    # The exchange's public address (scheme, host, optional path prefix, no trailing slash), e.g.
    # https://exchange.example.nhs.uk: every URL a client follows (fullUrl, paging links, attachment.url,
    # Location) is built on it. Unset: taken from the request; X-Forwarded-Proto/-Host are honoured only
    # when the request comes from one of the trusted proxies (IP addresses or networks).
    public_base_url: str | None = None
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("public_base_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("LHCIE_PUBLIC_BASE_URL must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # a typo fails the start, not a request
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def service_db_path(self, service: str) -> Path:
        return self.data_dir / f"{service}.sqlite3"


# Settings with no safe default: ``lhcie serve`` needs each one set explicitly (with the adapter it serves).
SERVE_REQUIRED: dict[str, Callable[[Settings], bool]] = {
    "jwt_issuer": lambda s: True,
    "jwt_audience": lambda s: True,
    "amqp_url": lambda s: s.bus == BusKind.AMQP,
    "s3_bucket": lambda s: s.object_store == ObjectStoreKind.S3,
}


class UnsafeSettings(ValueError):
    """Settings a served (production) process must not start with; the message names each variable."""


def check_serving(settings: Settings) -> None:
    """Fail closed: what ``lhcie serve`` needs beyond what ``lhcie run`` can default."""
    problems = [
        f"LHCIE_{name.upper()} is not set"
        for name, needed in SERVE_REQUIRED.items()
        if needed(settings) and name not in settings.model_fields_set
    ]
    if settings.bus == BusKind.AMQP and "amqp_url" in settings.model_fields_set:
        url = urlsplit(settings.amqp_url.get_secret_value())
        if not url.username or not url.password:
            problems.append("LHCIE_AMQP_URL has no credentials (amqp://user:password@host/vhost)")
    if not settings.jwks_url and not settings.embedded_issuer:
        problems.append("LHCIE_JWKS_URL is not set (or set LHCIE_EMBEDDED_ISSUER=true for a test deployment)")
    if problems:
        raise UnsafeSettings("; ".join(problems))


def load_settings(**defaults: object) -> Settings:
    """Read settings from the environment; ``defaults`` replace the built-in defaults only.

    ``lhcie serve`` defaults to the real adapters and ``lhcie run`` to the embedded ones, but an
    explicit ``LHCIE_*`` variable always wins.
    """
    from_env = Settings()
    unset = {k: v for k, v in defaults.items() if k not in from_env.model_fields_set}
    return Settings(**{**from_env.model_dump(include=from_env.model_fields_set), **unset})
