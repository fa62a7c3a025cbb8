"""Notification's own settings (``LHCIE_NOTIFICATION_*``), read once and validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_NOTIFICATION_", extra="ignore", frozen=True)

    # The rules file; the shipped default when unset.
    rules_file: Path | None = None
    # Overrides every escalation step's delay (step n fires after n x this): for tests and drills only.
    escalation_after_seconds: float | None = Field(None, gt=0)
    # How often due timers are looked for; a timer fires at most this late.
    timer_tick_seconds: float = Field(5.0, gt=0)
    # How often an SSE stream looks for alerts written by another replica.
    stream_poll_seconds: float = Field(1.0, gt=0)
    # Lifetime of the signed query token that authorises an EventSource (it cannot send headers).
    stream_token_seconds: int = Field(300, ge=10, le=3600)

    # Rest-hook delivery: retries back off from base to max, for as long as the window (default 3 days:
    # a receiver down over a weekend still gets everything), then the notification is dead-lettered.
    webhook_retry_base_seconds: float = Field(30.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(3 * 24 * 3600.0, gt=0)
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_tick_seconds: float = Field(1.0, gt=0)
