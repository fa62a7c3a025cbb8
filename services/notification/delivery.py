"""Rest-hook delivery: signed POSTs of notification bundles, in order, retried with backoff and jitter
for a whole retry window (days by default), then dead-lettered with ``webhook.failed``.

Each request carries ``X-LHCIE-Timestamp`` (Unix seconds) and ``X-LHCIE-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``<timestamp>.<body>`` under the subscription's secret, so a receiver can check both origin
and freshness (refuse old timestamps: replay). A delivery is claimed with a lease before the POST, so two
replicas do not send it at once; if a replica dies after the receiver answered but before it recorded
the success, the notification is sent again with the same event number, which the receiver drops.

Leases and outcomes are written by group commit (``shared/batches.py``): the claims and outcomes of the
deliveries under way that are waiting for the writer go into one transaction, one fsync, instead of one
each (a fan-out to a hundred subscribers was two hundred). Each is still durable before it counts: a
POST follows its committed lease, and an outcome (with its ``webhook.delivered`` event, in the same
savepoint) is committed before the next notification of its subscription may start.

Subscriptions are served concurrently, each in its own task, with a few requests at a time per receiving
host and a bounded timeout per attempt, so one receiver that accepts connections and never answers
delays only its own notifications. Each subscription still has one request in flight at a time (order).

The requests themselves go through a ``WebhookClient``; the HTTP one (``webhook_http.py``) checks the
endpoint again at every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.notification.alerts import Alerts
from services.notification.endpoints import EndpointPolicy, Resolve, system_resolve
from services.notification.outgoing import Outgoing
from services.notification.settings import NotificationSettings
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
    SENDING,
    Subscriptions,
    notification_bundle,
)
from shared.batches import GroupCommit
from shared.clock import Clock, parse_stamp, stamp
from shared.events import RoutingKey, WebhookDelivered, WebhookFailed
from shared.store import Document, Session
from shared.waiting import wait_until_set

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
Render = Callable[[Document], Awaitable[dict[str, Any]]]


class WebhookClient(Protocol):
    async def post(self, endpoint: str, body: bytes, headers: Mapping[str, str]) -> tuple[bool, str]:
        """One attempt: whether the receiver took it (a 2xx), and if not, why (for the retry record)."""
        ...

    async def close(self) -> None: ...


# Opens a client that calls only endpoints ``policy`` admits, looking names up with ``resolve``, each
# attempt bounded by ``timeout_seconds``.
OpenClient = Callable[[EndpointPolicy, Resolve, float], WebhookClient]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Deliverer:
    def __init__(
        self,
        *,
        group: GroupCommit,
        subscriptions: Subscriptions,
        alerts: Alerts,
        render: Render,
        outgoing: Outgoing,
        clock: Clock,
        settings: NotificationSettings,
        open_client: OpenClient,
    ) -> None:
        # Leases and outcomes: one transaction for all those waiting together (its hook tells the outbox).
        self._group = group
        self._subscriptions = subscriptions
        self._alerts = alerts
        self._render = render
        self._outgoing = outgoing
        self._clock = clock
        # Read at start(): a restart takes new settings.
        self.settings = settings
        self._open_client = open_client
        self._client: WebhookClient | None = None
        # The name lookup every connection goes through (tests play DNS rebinding by replacing it).
        self.resolve: Resolve = system_resolve
        # One request at a time per subscription (its notifications go in order), in a task of its own so
        # that a receiver that never answers holds up nobody else.
        self._inflight: dict[str, asyncio.Task[bool]] = {}
        self._hosts: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._orgs: dict[str, asyncio.Semaphore] = {}
        self._all = asyncio.Semaphore(settings.webhook_concurrency)
        self._woken = asyncio.Event()
        self._heartbeats_looked = -math.inf  # monotonic seconds

    def wake(self) -> None:
        """Something may be due now (a notification committed in this process, a delivery finished so its
        subscription's next may go): the loop looks at once instead of at its next tick."""
        self._woken.set()

    async def wait(self, seconds: float) -> None:
        """Until ``wake`` or ``seconds`` (the tick finds what another replica committed)."""
        await wait_until_set(self._woken, seconds)
        self._woken.clear()

    async def start(self) -> None:
        self._all = asyncio.Semaphore(self.settings.webhook_concurrency)
        self._client = self._open_client(
            self.settings.webhook_policy(),
            lambda host, port: self.resolve(host, port),
            self.settings.webhook_timeout_seconds,
        )

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        # A cancelled attempt keeps its lease; another replica (or the next start) retakes it after.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter: half the step fixed, half random (no thundering herd)."""
        settings = self.settings
        step = min(settings.webhook_retry_base_seconds * 2 ** (attempts - 1), settings.webhook_retry_max_seconds)
        return timedelta(seconds=step / 2 + random.uniform(0, step / 2))

    async def run_once(self) -> int:
        """One pass that waits: start what is due, heartbeats included, then wait for every delivery under
        way (tests, drills); returns how many notifications were sent."""
        await self.dispatch(heartbeats=True)
        results = await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        return sum(r is True for r in results)

    async def dispatch(self, *, heartbeats: bool | None = None) -> None:
        """Start the next notification of each subscription that is due, and each heartbeat that is due,
        without waiting for them (the background loop: a slow receiver never delays the next pass).

        Heartbeats are looked for at most once per tick unless ``heartbeats`` says: their periods are a
        minute or more, and a look reads every active subscription, which after every finished delivery
        of a fan-out was half of each pass's CPU."""
        if heartbeats is None:
            heartbeats = self._heartbeats_looked_for()
        now = stamp(self._clock.now())
        for row in await self._subscriptions.next_for_each():
            if row["subscription"] in self._inflight:
                continue
            if row["status"] == PENDING and row["due"] > now:
                continue
            if row["status"] == SENDING and (row["lease"] or "") > now:
                continue  # another replica is sending it
            self._start(row["subscription"], self._deliver(row))
        for sub in await self._heartbeats_due() if heartbeats else ():
            if sub["_id"] not in self._inflight:
                self._start(sub["_id"], self._heartbeat(sub))

    def _heartbeats_looked_for(self) -> bool:
        """Whether a tick has passed since heartbeats were last looked for (then they are, now)."""
        now = time.monotonic()
        if now - self._heartbeats_looked < self.settings.webhook_tick_seconds:
            return False
        self._heartbeats_looked = now
        return True

    def _start(self, key: str, work: Coroutine[Any, Any, bool]) -> None:
        task = asyncio.create_task(work, name=f"webhook {key}")
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: str, task: asyncio.Task[bool]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        self.wake()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook.delivery_failed", exc_info=task.exception(), extra={"code": "NOT030"})

    @contextlib.asynccontextmanager
    async def _slot(self, sub: Document | None) -> AsyncIterator[None]:
        """A place among the requests to the endpoint's host (and port), then among the subscribing
        organisation's (so that one organisation's dead receivers cannot take every place), then among all."""
        settings = self.settings
        parts = urlsplit(sub["endpoint"] if sub else "")
        try:
            key = ((parts.hostname or "").lower(), parts.port or 0)
        except ValueError:
            key = ("", 0)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = asyncio.Semaphore(settings.webhook_concurrency_per_host)
        org_key = sub["org"] if sub else ""
        org = self._orgs.get(org_key)
        if org is None:
            org = self._orgs[org_key] = asyncio.Semaphore(settings.webhook_concurrency_per_organisation)
        async with host, org, self._all:
            yield

    def _lease(self) -> timedelta:
        # Longer than any attempt can last, or another replica would retake a delivery still under way.
        return max(LEASE, timedelta(seconds=2 * self.settings.webhook_timeout_seconds))

    async def _deliver(self, row: Document) -> bool:
        subs = self._subscriptions
        sub = await subs.get(row["subscription"])
        async with self._slot(sub):
            # Claimed only now, with a slot: a delivery waiting for one keeps no lease running.
            now = self._clock.now()
            lease_until = stamp(now + self._lease())

            async def claim(session: Session) -> bool:
                return await subs.claim(row, now=stamp(now), lease_until=lease_until, session=session)

            if not await self._group.apply(claim):
                return False
            if sub is None or sub["status"] == OFF:

                async def give_up(session: Session) -> None:
                    await subs.settle(row, {"status": FAILED, "lease": None}, session=session)

                await self._group.apply(give_up)
                return False
            ok, reason = await self._post(sub, row)
        await self._record(sub, row, ok, reason)
        return ok

    async def _post(self, sub: Document, row: Document) -> tuple[bool, str]:
        events = []
        resources = {}
        if row["kind"] == EVENT:
            events = [(row["number"], row["created"], row["focus"])]
            if sub["payload"] == "full-resource":
                alert = await self._alerts.get(row["focus"])
                if alert is not None:
                    resources[row["focus"]] = await self._render(alert)
        sub = {**sub, "events": max(row["number"], 0) if row["kind"] == EVENT else sub["events"]}
        body = json.dumps(notification_bundle(sub, row["kind"], events, resources), separators=(",", ":")).encode()
        return await self._send(sub, body, row["number"])

    async def _send(self, sub: Document, body: bytes, number: int) -> tuple[bool, str]:
        assert self._client is not None, "start() first"
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/fhir+json",
            "X-LHCIE-Timestamp": timestamp,
            "X-LHCIE-Signature": sign(sub["secret"], timestamp, body),
            "X-LHCIE-Subscription": sub["_id"],
            "X-LHCIE-Event-Number": str(number),
        }
        return await self._client.post(sub["endpoint"], body, headers)

    async def _record(self, sub: Document, row: Document, ok: bool, reason: str) -> None:
        now = self._clock.now()
        attempts = row["attempts"] + 1
        host = urlsplit(sub["endpoint"]).hostname or ""
        window = timedelta(seconds=self.settings.webhook_retry_window_seconds)

        async def work(session: Session) -> None:
            if ok:
                await self._subscriptions.settle(
                    row,
                    {"status": DELIVERED, "attempts": attempts, "lease": None, "delivered": stamp(now)},
                    session=session,
                )
                changes = {"last_sent": stamp(now)}
                if row["kind"] == HANDSHAKE:
                    changes["status"] = ACTIVE
                await self._subscriptions.set(sub["_id"], changes, session=session)
                if row["kind"] == EVENT:
                    await self._outgoing.publish(
                        RoutingKey.WEBHOOK_DELIVERED,
                        WebhookDelivered(
                            subscription_id=sub["_id"],
                            event_number=row["number"],
                            endpoint_host=host,
                            attempts=attempts,
                        ),
                        subject=sub["_id"],
                        session=session,
                    )
            elif now - parse_stamp(row["created"]) >= window:
                # Out of time: dead-letter it (it stays readable through $events) and move on.
                await self._subscriptions.settle(
                    row,
                    {"status": FAILED, "attempts": attempts, "lease": None, "last_error": reason},
                    session=session,
                )
                if row["kind"] == HANDSHAKE:
                    await self._subscriptions.set(
                        sub["_id"], {"status": ERROR, "error": f"handshake failed: {reason}"}, session=session
                    )
                await self._outgoing.publish(
                    RoutingKey.WEBHOOK_FAILED,
                    WebhookFailed(
                        subscription_id=sub["_id"],
                        event_number=row["number"],
                        endpoint_host=host,
                        attempts=attempts,
                        reason=reason,
                    ),
                    subject=sub["_id"],
                    session=session,
                )
                log.warning("webhook.dead_lettered attempts=%d reason=%s", attempts, reason, extra={"code": "NOT031"})
            else:
                await self._subscriptions.settle(
                    row,
                    {
                        "status": PENDING,
                        "attempts": attempts,
                        "lease": None,
                        "due": stamp(now + self.backoff(attempts)),
                        "last_error": reason,
                    },
                    session=session,
                )

        await self._group.apply(work)

    async def _heartbeats_due(self) -> list[Document]:
        now = self._clock.now()
        due = []
        for sub in await self._subscriptions.active_with_heartbeat():
            last = parse_stamp(sub["last_sent"]) if sub.get("last_sent") else None
            if last is None or now - last >= timedelta(seconds=sub["heartbeat"]):
                due.append(sub)
        return due

    async def _heartbeat(self, sub: Document) -> bool:
        now = self._clock.now()
        body = json.dumps(notification_bundle(sub, HEARTBEAT, []), separators=(",", ":")).encode()
        async with self._slot(sub):
            ok, _ = await self._send(sub, body, 0)
        if ok:
            await self._subscriptions.set(sub["_id"], {"last_sent": stamp(now)})
        return False  # a heartbeat is not a notification
