"""Breach-risk checks: a timer at midnight of the day each running waiting-time clock reaches its
breach-risk day, which raises a breach-risk alert if the clock is still running then; and the resolution
of those alerts when their clock stops or the pathway ends."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time

from services.notification import waiting_times
from services.notification.alerting import Alerting
from services.notification.alerts import CARETEAM_PREFIX, Alerts, alert_id
from services.notification.pathways import ACTIVE, Pathways
from services.notification.rules import RuleSet
from shared.clock import Clock, day_of
from shared.store import Document, Session
from shared.timers import Timers

BREACH_CHECK = "breach-check"


def _midnight(on: date) -> datetime:
    return datetime.combine(on, time(0, 0), tzinfo=UTC)


class BreachChecks:
    def __init__(
        self, *, pathways: Pathways, alerts: Alerts, alerting: Alerting, timers: Timers, rules: RuleSet, clock: Clock
    ) -> None:
        self._pathways = pathways
        self._alerts = alerts
        self._alerting = alerting
        self._timers = timers
        self._rules = rules
        self._clock = clock

    async def schedule(self, pathway: Document, clocks: Iterable[str], session: Session) -> None:
        """A check for each of ``clocks`` (just started) on the day it reaches its breach-risk day."""
        for name in clocks:
            clock = pathway["clocks"][name]
            due = self._pathways.breach_check_due(clock, name, date.fromisoformat(clock["start"]))
            if due is not None:
                await self._schedule(pathway["_id"], name, clock["start"], due, session)

    async def _schedule(self, pathway_id: str, name: str, start: str, due: date, session: Session) -> None:
        await self._timers.schedule(
            f"{BREACH_CHECK}|{pathway_id}|{name}|{start}|{due}",
            BREACH_CHECK,
            _midnight(due),
            subject=pathway_id,
            session=session,
            clock=name,
            start=start,
        )

    async def fire(self, timer: Document, session: Session) -> None:
        """The timer's action: the alert, if the clock that set it is still running and at risk."""
        pathway = await self._pathways.get(timer["subject"], session=session)
        name, start = timer["data"]["clock"], timer["data"]["start"]
        clock = (pathway or {}).get("clocks", {}).get(name)
        if (
            pathway is None
            or pathway["status"] != ACTIVE
            or clock is None
            or clock["start"] != start
            or clock.get("stop")
        ):
            return
        today = day_of(self._clock.now())
        due = self._pathways.breach_check_due(clock, name, today)
        if due is not None:  # a pause moved the day: check again then
            await self._schedule(pathway["_id"], name, start, due, session)
            return
        rule = self._rules.clocks[name]
        recipient = f"{CARETEAM_PREFIX}{pathway['mdt']}"
        days = waiting_times.day(clock, today)
        await self._alerting.raise_alert(
            {
                "_id": alert_id(f"breach|{pathway['_id']}|{name}|{start}", recipient),
                "kind": "breach-risk",
                "recipient": recipient,
                "mdt": pathway["mdt"],
                "audience": ["coordinators", "tumour-site-lead"],
                "priority": rule.breach_risk_priority,
                "patient": pathway["patient"],
                "document": None,
                "label": rule.label,
                "text": f"Breach risk: day {days} of {rule.target_days} ({rule.label})",
                "pathway_id": pathway["_id"],
                "clock": name,
            },
            None,
            session,
        )

    async def resolve_stopped(self, pathway: Document, session: Session) -> None:
        """Resolve the pathway's breach-risk alerts whose clock has stopped (or whose pathway has ended)."""
        for alert in await self._alerts.open_for_pathway(pathway["_id"], "breach-risk"):
            clock = pathway["clocks"].get(alert.get("clock", ""))
            if pathway["status"] == ACTIVE and clock is not None and not clock.get("stop"):
                continue
            await self._alerting.resolve(alert, "the clock stopped", session)
