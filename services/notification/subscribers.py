"""What a subscribing hospital system may do: create a rest-hook Subscription to its own organisation's
MDTs, or a rest-hook or SSE Subscription to care plan changes (its endpoint checked, its organisation's cap
kept), read it, and ask for its ``$status`` or its ``$events`` again to fill a gap. Which care plans it
hears of is the sharing policy's decision at each change (``care_plans.py``). The stored form and the FHIR
shapes are ``subscriptions.py``'s."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.notification.alerts import Alerts
from services.notification.feed import Writer
from services.notification.settings import NotificationSettings
from services.notification.subscriptions import (
    CAREPLAN_TOPIC,
    EVENT,
    SSE,
    Subscriptions,
    check_endpoint,
    notification_bundle,
    parse_subscription,
    status_resource,
    to_fhir,
)
from shared.auth import Caller
from shared.clock import Clock, stamp
from shared.fhir.errors import Code, FhirError
from shared.policy import PolicyView
from shared.store import Document, DocumentStore

Render = Callable[[Document], Awaitable[dict[str, Any]]]


class Subscribers:
    def __init__(
        self,
        *,
        store: DocumentStore,
        subscriptions: Subscriptions,
        alerts: Alerts,
        render: Render,
        policy: PolicyView,
        clock: Clock,
        write: Writer,
        settings: NotificationSettings,
    ) -> None:
        self._store = store
        self._subscriptions = subscriptions
        self._alerts = alerts
        self._render = render
        self._policy = policy
        self._clock = clock
        self._write = write
        # The endpoint allow-list, the minimum heartbeat and the per-organisation cap.
        self.settings = settings

    @staticmethod
    def require_subscriber(who: Caller) -> None:
        """Subscriptions are a hospital system's: their ``$events`` replay alerts in full, so an organisation's
        other staff (an auditor, a clinician without an MDT claim) must not read them either."""
        if who.role != "system":
            raise FhirError.of(Code.FORBIDDEN, "Only a hospital system (system token) may use subscriptions.")

    async def subscribe(self, who: Caller, resource: dict[str, Any]) -> dict[str, Any]:
        self.require_subscriber(who)
        doc = parse_subscription(resource, org=who.org, min_heartbeat=self.settings.webhook_min_heartbeat_seconds)
        if doc["topic"] != CAREPLAN_TOPIC:
            team = await self._policy.careteam(doc["mdt"])
            if team is None or team.organisation != who.org:
                raise FhirError.of(Code.FORBIDDEN, "A system may only subscribe to its own organisation's MDTs.")
        if doc["channel"] != SSE:
            await check_endpoint(self.settings.webhook_policy(), doc["endpoint"])

        async def work() -> None:
            async with self._store.transaction() as session:
                await self._subscriptions.create(
                    doc,
                    stamp(self._clock.now()),
                    session=session,
                    cap=self.settings.webhook_max_subscriptions_per_organisation,
                )

        await self._write(work)
        return to_fhir(doc, with_secret=True)

    async def get(self, who: Caller, key: str) -> Document:
        """The caller's own subscription; 404 for anyone else's, as for one that does not exist."""
        self.require_subscriber(who)
        doc = await self._subscriptions.get(key)
        if doc is None or doc["org"] != who.org:
            raise FhirError.of(Code.NOT_FOUND)
        return doc

    async def read(self, who: Caller, key: str) -> dict[str, Any]:
        return to_fhir(await self.get(who, key))

    async def status(self, who: Caller, key: str) -> dict[str, Any]:
        return status_resource(await self.get(who, key), "query-status", [])

    async def events(
        self, who: Caller, key: str, since: int | None, until: int | None, content: str | None
    ) -> dict[str, Any]:
        """``$events``: the notifications numbered ``since``..``until`` again, to fill a gap."""
        sub = await self.get(who, key)
        last = int(sub["events"])
        since, until = max(since or 1, 1), min(until or last, last)
        rows = await self._subscriptions.events(key, since, until) if since <= until else []
        payload = content or sub["payload"]
        if payload == "full-resource" and (
            sub.get("topic") == CAREPLAN_TOPIC or not (sub["endpoint"] or "").startswith("https://")
        ):
            payload = "id-only"
        events = [(r["number"], r["created"], r["focus"]) for r in rows if r["kind"] == EVENT]
        resources = {}
        if payload == "full-resource":
            for _, _, focus in events:
                alert = await self._alerts.get(focus or "")
                if alert is not None:
                    resources[alert["_id"]] = await self._render(alert)
        return notification_bundle({**sub, "payload": payload}, "query-event", events, resources)
