"""A replica's live streams wake for another replica's alert change heard on the bus, not for their own
process's (its commit woke them already) and not for events that change no alert."""

from __future__ import annotations

from services.notification.live import Listeners
from services.notification.outgoing import Announced, Outgoing
from services.notification.replicas import OtherReplicas
from shared.bus.memory import MemoryBus
from shared.events import AlertRaised, Event, RoutingKey
from shared.store import Session
from tests.helpers import denial


def raised(alert_id: str = "a1") -> Event:
    payload = AlertRaised(alert_id=alert_id, recipient="CareTeam/rj1-lung", priority="routine")
    return Event.new(RoutingKey.ALERT_RAISED, payload, source="urn:lhcie:service:notification", subject=alert_id)


async def test_another_replicas_alert_wakes_the_streams_and_this_ones_own_does_not() -> None:
    bus = MemoryBus()
    listeners = Listeners()
    announced = Announced()
    others = OtherReplicas(bus, listeners, announced)
    await others.start()
    wake = listeners.listen()

    own = raised("mine")
    announced.add(own.id)
    await bus.publish(own)
    await bus.publish(denial())  # not an alert change
    assert not wake.is_set() and others.heard == 0

    await bus.publish(raised("theirs"))
    assert wake.is_set() and others.heard == 1

    await others.stop()
    wake.clear()
    await bus.publish(raised("later"))
    assert not wake.is_set()


class _Outbox:
    def __init__(self) -> None:
        self.added: list[Event] = []

    async def add(self, event: Event, *, session: Session) -> None:
        self.added.append(event)

    def notify(self) -> None:
        return None


async def test_outgoing_remembers_the_alert_changes_it_announces_and_only_those() -> None:
    outbox = _Outbox()
    outgoing = Outgoing(None, outbox, "urn:lhcie:service:notification")  # type: ignore[arg-type]
    payload = AlertRaised(alert_id="a1", recipient="CareTeam/rj1-lung", priority="routine")
    await outgoing.publish(RoutingKey.ALERT_RAISED, payload, subject="a1", session=None)  # type: ignore[arg-type]
    other = denial()
    await outgoing.publish(
        RoutingKey.ACCESS_DENIED,
        other.payload(),
        subject="x",
        session=None,  # type: ignore[arg-type]
    )
    alert, refusal = outbox.added
    assert alert.id in outgoing.announced
    assert refusal.id not in outgoing.announced


def test_announced_forgets_the_oldest_first() -> None:
    announced = Announced(limit=3)
    for n in range(5):
        announced.add(str(n))
    assert [str(n) in announced for n in range(5)] == [False, False, True, True, True]
