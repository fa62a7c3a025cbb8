"""The care service's parts in one place: plans, repatriations, discharge summaries, their timers."""

from __future__ import annotations

from datetime import datetime

from services.care.access import Access
from services.care.careplans import CarePlans
from services.care.discharges import Discharges
from services.care.repatriations import Repatriations
from services.care.settings import CareSettings
from shared.clock import Clock, SystemClock
from shared.context import ServiceContext
from shared.events import Event
from shared.policy import PolicyView
from shared.timers import Timers


class Care:
    def __init__(self, ctx: ServiceContext, settings: CareSettings, clock: Clock | None = None) -> None:
        self.ctx = ctx
        self.settings = settings  # read once, by create_app
        # Replaceable (tests, drills): every part asks ``self.clock`` through this one holder.
        self.clock: Clock = clock or SystemClock()
        clock_holder = _ClockOf(self)
        self.access = Access(ctx)
        self.timers = Timers(ctx.store, clock_holder)
        self.plans = CarePlans(ctx, self.access, clock_holder)
        self.transfers = Repatriations(ctx, self.access, self.timers, self.settings, clock_holder)
        self.discharges = Discharges(ctx, self.access, self.timers, self.settings, clock_holder)

    @property
    def policy(self) -> PolicyView:
        return self.access.policy

    async def on_policy(self, event: Event) -> None:
        await self.ctx.once(event, lambda session: self.access.policy.apply(event, session=session))

    async def run_timers(self) -> int:
        fired = await self.timers.run_due()
        if fired:
            self.ctx.outbox.notify()
        return fired


class _ClockOf:
    """The care service's current clock, looked up at each call (so a test can swap it)."""

    def __init__(self, care: Care) -> None:
        self._care = care

    def now(self) -> datetime:
        return self._care.clock.now()
