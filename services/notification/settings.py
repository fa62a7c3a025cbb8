"""Notification's own settings (``LHCIE_NOTIFICATION_*``), read once and validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.notification.endpoints import EndpointPolicy


class NotificationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_NOTIFICATION_", extra="ignore", frozen=True)

    # The rules file; the shipped default when unset.
    rules_file: Path | None = None
    # Overrides every escalation step's delay (step n fires after n x this): for tests and drills only.
    escalation_after_seconds: float | None = Field(None, gt=0)
    # How often due timers are looked for; a timer fires at most this late.
    timer_tick_seconds: float = Field(5.0, gt=0)
    # How often an SSE stream looks for alerts written by another replica: the safety net, since each
    # replica hears of another's alert changes on the bus at once (replicas.py) but a wake-up may be lost.
    stream_poll_seconds: float = Field(1.0, gt=0)
    # Lifetime of the signed query token that authorises an EventSource (it cannot send headers).
    # Kept short and bounded: the token travels in a URL, where logs and histories keep it.
    stream_token_seconds: int = Field(300, ge=10, le=900)
    # Live streams open at once in this process, per person and per MDT (beyond: 429).
    stream_max_per_subject: int = Field(5, ge=1)
    stream_max_per_mdt: int = Field(50, ge=1)
    # The stream-token signing keys (current first, then the previous one during a rotation); default
    # <data dir>/notification/stream-token.keys, created with mode 0600. Every replica needs the same file.
    stream_key_file: Path | None = None
    # POST /fhir/Communication/$reconcile runs at most once per this many seconds in a process.
    reconcile_interval_seconds: float = Field(60.0, gt=0)

    # Rest-hook delivery: retries back off from base to max, for as long as the window (default 3 days:
    # a receiver down over a weekend still gets everything), then the notification is dead-lettered.
    webhook_retry_base_seconds: float = Field(30.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(3 * 24 * 3600.0, gt=0)
    # Bounded: a black-holed receiver holds one of its host's delivery slots for at most this long.
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    webhook_tick_seconds: float = Field(1.0, gt=0)

    # Rest-hook endpoints (SSRF): hosts, addresses or CIDR ranges, comma-separated, that may be called
    # although they are loopback, private, link-local, CGNAT or metadata addresses (refused otherwise).
    webhook_allowed_hosts: str = ""
    # Subscriptions one organisation may hold (requested, active or in error); more are refused (422).
    webhook_max_subscriptions_per_organisation: int = Field(100, ge=1)
    # The shortest heartbeat period a Subscription may ask for: each heartbeat is a POST to the receiver.
    webhook_min_heartbeat_seconds: int = Field(60, ge=1)
    # Rest-hook POSTs in flight to one host (host and port) at once; other hosts never wait for it.
    webhook_concurrency_per_host: int = Field(4, ge=1, le=64)
    # Rest-hook POSTs in flight for one organisation's subscriptions, and in all. 64: a trust subscribing
    # a hundred endpoints (the most it may hold) is served in two waves, not seven as at 16, while it still
    # takes at most a quarter of all places (its dead receivers alone cannot starve the others); receivers
    # are protected by the per-host limit, which this does not change.
    webhook_concurrency_per_organisation: int = Field(64, ge=1, le=256)
    webhook_concurrency: int = Field(256, ge=1, le=4096)

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        EndpointPolicy.parse(value.split(","))  # a typo fails the start, not a delivery
        return value

    def webhook_policy(self) -> EndpointPolicy:
        return EndpointPolicy.parse(self.webhook_allowed_hosts.split(","))
