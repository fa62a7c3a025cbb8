"""The notification service's parts, each given the collaborators it needs, and the few things every
caller reaches through the whole: its clock, its settings, its timers.

The parts, by concern:

- ``documents.py``: alerts from stored documents (and the pathways they open or join);
- ``alerting.py``: an alert's life, raised, escalated, acknowledged or resolved, and the coordinators' search;
- ``breach_checks.py`` and ``digest.py``: the timed alerts (breach risk, the daily digest);
- ``reconciliation.py``: the alerts the stored documents call for and that are missing;
- ``pathway_actions.py``: what an MDT's staff do with its pathways;
- ``live.py``: the live stream of an MDT's alerts;
- ``subscribers.py`` and ``delivery.py``: rest-hook subscriptions and their delivery;
- ``care_plans.py`` and ``subscription_streams.py``: care plan changes for subscribers, by rest-hook or SSE;
- ``transfer_alerts.py``: the receiving trust's bed managers' alerts for repatriations.

Every effect of an event or a timer is written in one transaction with its outbox event and its feed
entry, so a redelivery, a reconciliation pass or a second replica never doubles an alert.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Protocol, TypeVar

from services.notification.access import Access
from services.notification.alerting import ESCALATE, Alerting
from services.notification.alerts import AlertRenderer, Alerts
from services.notification.breach_checks import BREACH_CHECK, BreachChecks
from services.notification.care_plans import CarePlanNotices
from services.notification.delivery import Deliverer, OpenClient
from services.notification.digest import DIGEST, Digest
from services.notification.documents import DocumentAlerts, StoredDocuments
from services.notification.feed import Feed, Writer
from services.notification.live import Listeners, LiveAlerts
from services.notification.outgoing import Outbox, Outgoing
from services.notification.pathway_actions import PathwayActions
from services.notification.pathways import Pathways
from services.notification.reconciliation import Reconciliation, Throttle
from services.notification.rules import RuleSet
from services.notification.settings import NotificationSettings
from services.notification.streams import StreamSlots
from services.notification.subscribers import Subscribers
from services.notification.subscription_streams import SubscriptionStreams
from services.notification.subscriptions import Subscriptions
from services.notification.transfer_alerts import TransferAlerts
from shared.batches import GroupCommit
from shared.clock import AdjustableClock, Clock, SystemClock, day_of
from shared.events import Event
from shared.policy import PolicyView
from shared.store import DocumentStore, Session
from shared.timers import Timers

T = TypeVar("T")


class Context(Protocol):
    """What the service takes from its process: its own store, its outbox and its inbox."""

    @property
    def store(self) -> DocumentStore: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def source(self) -> str: ...

    async def once(
        self, event: Event, effect: Callable[[Session], Awaitable[T]], *, shared: bool = False
    ) -> T | None: ...


class Notification:
    def __init__(
        self,
        ctx: Context,
        *,
        settings: NotificationSettings,
        rules: RuleSet,
        open_client: OpenClient,
        clock: Clock | None = None,
    ) -> None:
        self.ctx = ctx
        self._settings = settings
        self.rules = rules
        store = ctx.store
        self.clock = AdjustableClock(clock or SystemClock())
        self.listeners = Listeners()
        # A committed write may have queued rest-hook notifications: their delivery starts now, not at the
        # next tick (the deliverer is built below; the hook runs only after a commit).
        write = Writer(ctx.outbox.notify, self.listeners.changed, lambda: self.deliverer.wake())
        outgoing = self.outgoing = Outgoing(store, ctx.outbox, ctx.source)

        self.policy = PolicyView(store)
        self.alerts = Alerts(store)
        self.feed = Feed(store)
        self.timers = Timers(store, self.clock)
        self.pathways = Pathways(store, rules)
        self.subscriptions = Subscriptions(store)
        self.documents = StoredDocuments(store)
        self.access = Access(outgoing, self.policy)
        self.render = AlertRenderer(self.pathways, self.clock)
        self._write = write

        self.alerting = Alerting(
            store=store,
            alerts=self.alerts,
            feed=self.feed,
            subscriptions=self.subscriptions,
            timers=self.timers,
            outgoing=outgoing,
            access=self.access,
            render=self.render,
            write=write,
            rules=rules,
            clock=self.clock,
            escalation_after_seconds=settings.escalation_after_seconds,
        )
        self.breach_checks = BreachChecks(
            pathways=self.pathways,
            alerts=self.alerts,
            alerting=self.alerting,
            timers=self.timers,
            rules=rules,
            clock=self.clock,
        )
        self.digest = Digest(
            store=store,
            alerts=self.alerts,
            pathways=self.pathways,
            alerting=self.alerting,
            timers=self.timers,
            rules=rules,
            clock=self.clock,
        )
        self.document_alerts = DocumentAlerts(
            documents=self.documents,
            alerts=self.alerts,
            pathways=self.pathways,
            policy=self.policy,
            alerting=self.alerting,
            breach_checks=self.breach_checks,
            rules=rules,
            once=ctx.once,
            write=write,
        )
        self.reconciliation = Reconciliation(
            store=store,
            documents=self.documents,
            document_alerts=self.document_alerts,
            policy=self.policy,
            digest=self.digest,
            access=self.access,
            write=write,
            throttle=Throttle(settings.reconcile_interval_seconds),
        )
        self.pathway_actions = PathwayActions(
            store=store,
            pathways=self.pathways,
            policy=self.policy,
            access=self.access,
            alerting=self.alerting,
            breach_checks=self.breach_checks,
            rules=rules,
            clock=self.clock,
            write=write,
        )
        self.live = LiveAlerts(
            feed=self.feed,
            alerts=self.alerts,
            render=self.render,
            access=self.access,
            listeners=self.listeners,
            slots=StreamSlots(settings.stream_max_per_subject, settings.stream_max_per_mdt),
            clock=self.clock,
            poll_seconds=settings.stream_poll_seconds,
        )
        self.subscribers = Subscribers(
            store=store,
            subscriptions=self.subscriptions,
            alerts=self.alerts,
            render=self.render,
            policy=self.policy,
            clock=self.clock,
            write=write,
            settings=settings,
        )
        self.care_plans = CarePlanNotices(
            subscriptions=self.subscriptions, policy=self.policy, clock=self.clock, once=ctx.once, write=write
        )
        self.transfer_alerts = TransferAlerts(
            alerts=self.alerts,
            alerting=self.alerting,
            feed=self.feed,
            outgoing=outgoing,
            clock=self.clock,
            once=ctx.once,
            write=write,
        )
        self.subscription_streams = SubscriptionStreams(
            subscriptions=self.subscriptions, listeners=self.listeners, poll_seconds=settings.stream_poll_seconds
        )
        self.deliverer = Deliverer(
            # Its leases and outcomes change no alert: the outbox is told, the live streams need not be.
            group=GroupCommit(store, after_commit=ctx.outbox.notify),
            subscriptions=self.subscriptions,
            alerts=self.alerts,
            render=self.render,
            outgoing=outgoing,
            clock=self.clock,
            settings=settings,
            open_client=open_client,
        )

        self.timers.on(ESCALATE, self.alerting.escalate)
        self.timers.on(BREACH_CHECK, self.breach_checks.fire)
        self.timers.on(DIGEST, self.digest.fire)

    @property
    def settings(self) -> NotificationSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: NotificationSettings) -> None:
        """Tests and drills: new settings for a running service. The subscription limits apply at once and
        delivery's at the deliverer's next start; the rest were taken when the service was built."""
        self._settings = self.subscribers.settings = self.deliverer.settings = settings

    def set_clock(self, clock: Clock) -> None:
        """Tests and drills: move time for pathway days, timers, alerts and deliveries alike."""
        self.clock.set(clock)

    def today(self) -> date:
        return day_of(self.clock.now())

    async def run_timers(self) -> int:
        """Fire every timer that is due; returns how many this process fired."""
        return await self._write(self.timers.run_due)

    async def reconcile(self) -> int:
        return await self.reconciliation.reconcile()
