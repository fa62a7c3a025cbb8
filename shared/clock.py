"""Time as a service sees it: injectable, so timers, waiting hours and pathway days can be tested."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to (tests, drills)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


class AdjustableClock:
    """The one clock every part of a service reads, so that a test or a drill moves time for all of
    them at once (notification's pathway days, timers, deliveries, alerts)."""

    def __init__(self, clock: Clock) -> None:
        self.current = clock

    def now(self) -> datetime:
        return self.current.now()

    def set(self, clock: Clock) -> None:
        self.current = clock


def stamp(at: datetime) -> str:
    """A UTC timestamp whose string order is its time order (stored times are compared as strings)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def day_of(at: datetime) -> date:
    """The calendar date in London: waiting-time days are counted in calendar days where care happens."""
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo("Europe/London")).date()


def fhir_instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def hours_between(start: datetime, end: datetime) -> float:
    return round(max((end - start).total_seconds(), 0) / 3600, 1)
