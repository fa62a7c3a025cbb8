"""Cancer Waiting Times arithmetic (NHS England CWT guidance v12.1): clock days, risk, PTL buckets.

Pure functions on a clock's stored state, so each start, stop, pause and threshold is testable with a
given date. A clock counts calendar days from its start date (the day of receipt is day 0); recorded
pauses are taken off; a stopped clock stays at its stop date.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from services.notification.rules import Clock

ON_TRACK, AT_RISK, BREACHED, MET = "on-track", "at-risk", "breached", "met"
PTL_BUCKETS = ((0, 28, "0-28"), (29, 62, "29-62"), (63, 104, "63-104"), (105, None, "over-104"))


def new_clock(start: date) -> dict[str, Any]:
    return {"start": start.isoformat(), "stop": None, "paused_days": 0, "paused_since": None}


def day(clock: dict[str, Any], today: date) -> int:
    start = date.fromisoformat(clock["start"])
    end = date.fromisoformat(clock["stop"]) if clock.get("stop") else today
    paused = int(clock.get("paused_days", 0))
    if clock.get("paused_since") and not clock.get("stop"):
        paused += (today - date.fromisoformat(clock["paused_since"])).days
    return max((end - start).days - paused, 0)


def risk(clock: dict[str, Any], rule: Clock, today: date) -> str:
    days = day(clock, today)
    if clock.get("stop"):
        return MET if days <= rule.target_days else BREACHED
    if days > rule.target_days:
        return BREACHED
    return AT_RISK if days >= rule.breach_risk_day else ON_TRACK


def stop(clock: dict[str, Any], on: date) -> None:
    if clock.get("paused_since"):
        resume(clock, on)
    clock["stop"] = on.isoformat()


def pause(clock: dict[str, Any], on: date) -> None:
    if not clock.get("stop") and not clock.get("paused_since"):
        clock["paused_since"] = on.isoformat()


def resume(clock: dict[str, Any], on: date) -> None:
    if clock.get("paused_since"):
        clock["paused_days"] = int(clock.get("paused_days", 0)) + (on - date.fromisoformat(clock["paused_since"])).days
        clock["paused_since"] = None


def bucket(days: int) -> str:
    for low, high, label in PTL_BUCKETS:
        if days >= low and (high is None or days <= high):
            return label
    return PTL_BUCKETS[0][2]
