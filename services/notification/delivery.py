"""Rest-hook delivery: signed POSTs of notification bundles, in order, retried with backoff and jitter
for a whole retry window (days by default), then dead-lettered with ``webhook.failed``.

Each request carries ``X-LHCIE-Timestamp`` (Unix seconds) and ``X-LHCIE-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>`` under the subscription's secret, so a receiver can check both origin
and freshness (refuse old timestamps: replay). A delivery is claimed with a lease before the POST, so two
replicas do not send it at once; if a replica dies after the receiver answered but before it recorded
the success, the notification is sent again with the same event number, which the receiver drops.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from services.notification.clock import parse_stamp, stamp
from services.notification.subscriptions import (
    ACTIVE,
    DELIVERED,
    ERROR,
    EVENT,
    FAILED,
    HANDSHAKE,
    HEARTBEAT,
    OFF,
    PENDING,
    notification_bundle,
)
from shared.events import Event, RoutingKey, WebhookDelivered, WebhookFailed
from shared.store import Document

if TYPE_CHECKING:
    from services.notification.domain import Notification

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Deliverer:
    def __init__(self, notification: Notification) -> None:
        self.n = notification
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.n.settings.webhook_timeout_seconds))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half the step fixed, half random (no thundering herd)."""
        settings = self.n.settings
        step = min(settings.webhook_retry_base_seconds * 2 ** (attempts - 1), settings.webhook_retry_max_seconds)
        return timedelta(seconds=step / 2 + random.uniform(0, step / 2))

    async def run_once(self) -> int:
        """One pass: the next notification of each subscription that is due; returns how many were sent."""
        sent = 0
        subs = self.n.subscriptions
        for row in await subs.next_for_each():
            now = self.n.clock.now()
            if row["status"] == PENDING and row["due"] > stamp(now):
                continue
            if not await subs.claim(row, now=stamp(now), lease_until=stamp(now + LEASE)):
                continue
            sub = await subs.get(row["subscription"])
            if sub is None or sub["status"] == OFF:
                async with self.n.ctx.store.transaction() as session:
                    await subs.settle(row, {"status": FAILED, "lease": None}, session=session)
                continue
            ok, reason = await self._post(sub, row)
            await self._record(sub, row, ok, reason)
            sent += ok
        await self._heartbeats()
        return sent

    async def _post(self, sub: Document, row: Document) -> tuple[bool, str]:
        events = []
        resources = {}
        if row["kind"] == EVENT:
            events = [(row["number"], row["created"], row["focus"])]
            if sub["payload"] == "full-resource":
                alert = await self.n.alerts.get(row["focus"])
                if alert is not None:
                    resources[row["focus"]] = await self.n.render(alert)
        sub = {**sub, "events": max(row["number"], 0) if row["kind"] == EVENT else sub["events"]}
        body = json.dumps(notification_bundle(sub, row["kind"], events, resources), separators=(",", ":")).encode()
        return await self._send(sub, body, row["number"])

    async def _send(self, sub: Document, body: bytes, number: int) -> tuple[bool, str]:
        assert self._http is not None, "start() first"
        timestamp = str(int(self.n.clock.now().timestamp()))
        headers = {"Content-Type": "application/fhir+json", "X-LHCIE-Timestamp": timestamp,
                   "X-LHCIE-Signature": sign(sub["secret"], timestamp, body),
                   "X-LHCIE-Subscription": sub["_id"], "X-LHCIE-Event-Number": str(number)}
        try:
            async with self._http.post(sub["endpoint"], data=body, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return True, ""
                return False, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, type(exc).__name__

    async def _record(self, sub: Document, row: Document, ok: bool, reason: str) -> None:
        now = self.n.clock.now()
        attempts = row["attempts"] + 1
        host = urlsplit(sub["endpoint"]).hostname or ""
        window = timedelta(seconds=self.n.settings.webhook_retry_window_seconds)

        async def work() -> None:
            async with self.n.ctx.store.transaction() as session:
                if ok:
                    await self.n.subscriptions.settle(row, {"status": DELIVERED, "attempts": attempts, "lease": None,
                                                            "delivered": stamp(now)}, session=session)
                    changes = {"last_sent": stamp(now)}
                    if row["kind"] == HANDSHAKE:
                        changes["status"] = ACTIVE
                    await self.n.subscriptions.set(sub["_id"], changes, session=session)
                    if row["kind"] == EVENT:
                        await self.n.ctx.publish(Event.new(
                            RoutingKey.WEBHOOK_DELIVERED,
                            WebhookDelivered(subscription_id=sub["_id"], event_number=row["number"],
                                             endpoint_host=host, attempts=attempts),
                            source=self.n.ctx.source, subject=sub["_id"]), session=session)
                elif now - parse_stamp(row["created"]) >= window:
                    # Out of time: dead-letter it (it stays readable through $events) and move on.
                    await self.n.subscriptions.settle(row, {"status": FAILED, "attempts": attempts, "lease": None,
                                                            "last_error": reason}, session=session)
                    if row["kind"] == HANDSHAKE:
                        await self.n.subscriptions.set(sub["_id"], {"status": ERROR,
                                                                    "error": f"handshake failed: {reason}"},
                                                       session=session)
                    await self.n.ctx.publish(Event.new(
                        RoutingKey.WEBHOOK_FAILED,
                        WebhookFailed(subscription_id=sub["_id"], event_number=row["number"], endpoint_host=host,
                                      attempts=attempts, reason=reason),
                        source=self.n.ctx.source, subject=sub["_id"]), session=session)
                    log.warning("webhook.dead_lettered attempts=%d reason=%s", attempts, reason,
                                extra={"code": "NOT031"})
                else:
                    await self.n.subscriptions.settle(row, {"status": PENDING, "attempts": attempts, "lease": None,
                                                            "due": stamp(now + self.backoff(attempts)),
                                                            "last_error": reason}, session=session)

        await self.n.write(work)

    async def _heartbeats(self) -> None:
        now = self.n.clock.now()
        for sub in await self.n.subscriptions.active_with_heartbeat():
            last = parse_stamp(sub["last_sent"]) if sub.get("last_sent") else None
            if last is not None and now - last < timedelta(seconds=sub["heartbeat"]):
                continue
            body = json.dumps(notification_bundle(sub, HEARTBEAT, []), separators=(",", ":")).encode()
            ok, _ = await self._send(sub, body, 0)
            if ok:
                await self.n.subscriptions.set(sub["_id"], {"last_sent": stamp(now)})
