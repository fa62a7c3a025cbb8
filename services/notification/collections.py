"""Notification's collections and indexes as data, for ``lhcie store init`` (the modules named beside each
open them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "documents": (Index(("related",)), Index(("stored_at",))),  # domain.py
    "alerts": (
        Index(("mdt", "sent")),
        Index(("mdt", "status", "rank")),
        Index(("patient",)),
        Index(("status",)),
    ),  # alerts.py
    "alert_feed": (Index(("mdt", "seq")), Index(("seq",))),  # feed.py
    "counters": (),  # feed.py, subscriptions.py
    "subscriptions": (
        Index(("mdt", "status")),
        Index(("org",)),
        Index(("topic", "status")),
    ),  # subscriptions.py, care_plans.py
    "deliveries": (Index(("status", "due")), Index(("subscription", "number"))),  # subscriptions.py
    "pathways": (Index(("patient", "mdt", "status")), Index(("mdt", "status"))),  # pathways.py
    "timers": (Index(("status", "due")), Index(("subject",))),  # shared/timers.py
    "secrets": (),  # stream_tokens.py
}
