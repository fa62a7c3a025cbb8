"""The daily digest: once a day, at the rules' local time, one routine alert per MDT counting its open
alerts by priority and its pathway clocks at risk or breached. A durable timer per MDT and day, so a
restart or a second replica neither skips nor doubles it."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.notification.alerting import Alerting
from services.notification.alerts import CARETEAM_PREFIX, Alerts, alert_id
from services.notification.pathways import Pathways
from services.notification.rules import RuleSet
from shared.clock import Clock, day_of
from shared.store import Document, DocumentStore, Session
from shared.timers import Timers

DIGEST = "digest"


class Digest:
    def __init__(
        self,
        *,
        store: DocumentStore,
        alerts: Alerts,
        pathways: Pathways,
        alerting: Alerting,
        timers: Timers,
        rules: RuleSet,
        clock: Clock,
    ) -> None:
        self._store = store
        self._alerts = alerts
        self._pathways = pathways
        self._alerting = alerting
        self._timers = timers
        self._rules = rules
        self._clock = clock

    def _next(self) -> datetime | None:
        if self._rules.digest is None:
            return None
        zone = ZoneInfo(self._rules.digest.timezone)
        hour, minute = (int(p) for p in self._rules.digest.at.split(":"))
        local = self._clock.now().astimezone(zone)
        at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > local else (at + timedelta(days=1)).replace(hour=hour, minute=minute)

    async def schedule(self, mdt: str, *, session: Session | None = None) -> None:
        """The MDT's next digest (idempotent: one timer per MDT and day)."""
        due = self._next()
        if due is None:
            return
        key = f"{DIGEST}|{mdt}|{due.date().isoformat()}"
        if session is not None:
            await self._timers.schedule(key, DIGEST, due, subject=mdt, session=session)
            return
        async with self._store.transaction() as own:
            await self._timers.schedule(key, DIGEST, due, subject=mdt, session=own)

    async def fire(self, timer: Document, session: Session) -> None:
        """The timer's action: the digest alert, then the next day's timer."""
        mdt = timer["subject"]
        counts = await self._alerts.open_by_priority(mdt)
        today = day_of(self._clock.now())
        risks = {"at-risk": 0, "breached": 0}
        for pathway in await self._pathways.for_mdt(mdt):
            for clock in self._pathways.clock_summary(pathway, today):
                if clock["risk"] in risks and not clock["stop"]:
                    risks[clock["risk"]] += 1
        open_total = sum(counts.values())
        detail = ", ".join(f"{counts[p]} {p}" for p in ("stat", "asap", "urgent", "routine") if counts.get(p))
        recipient = f"{CARETEAM_PREFIX}{mdt}"
        await self._alerting.raise_alert(
            {
                "_id": alert_id(f"digest|{mdt}|{today.isoformat()}", recipient),
                "kind": "daily-digest",
                "recipient": recipient,
                "mdt": mdt,
                "audience": ["coordinators"],
                "priority": "routine",
                "patient": None,
                "document": None,
                "label": "Daily digest",
                "escalate": False,
                "text": (
                    f"Daily digest for {today.isoformat()}: {open_total} open alert(s)"
                    f"{f' ({detail})' if detail else ''}; {risks['at-risk']} pathway clock(s) at risk, "
                    f"{risks['breached']} breached"
                ),
            },
            None,
            session,
        )
        await self.schedule(mdt, session=session)
