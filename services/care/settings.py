"""The care service's own settings (``LHCIE_CARE_*``), read once and validated at start-up."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Trauma and critical-care networks expect a repatriation within 48 hours of referral.
DEFAULT_ESCALATION_HOURS = 48.0


class CareSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_CARE_", extra="ignore", frozen=True)

    # Hours from referral to transfer before a repatriation escalates, for networks that set their own
    # (``LHCIE_CARE_NETWORK_ESCALATION_HOURS='{"south-london-trauma": 36}'``); others use the default.
    escalation_hours: float = Field(DEFAULT_ESCALATION_HOURS, gt=0)
    network_escalation_hours: dict[str, float] = Field(default_factory=dict)
    # Hours a recipient has to acknowledge a discharge summary (business acknowledgement) before the
    # sender is told.
    discharge_ack_hours: float = Field(24.0, gt=0)
    # How often due timers are looked for; a timer fires at most this late.
    timer_tick_seconds: float = Field(30.0, gt=0)
    # With the embedded run's demo data (LHCIE_DEMO): whether care adds its plan and repatriation.
    demo_data: bool = True

    def escalation_for(self, network: str | None) -> float:
        return self.network_escalation_hours.get(network or "", self.escalation_hours)
