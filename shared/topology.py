"""Who consumes what: every service's queues as value objects.

Every service declares the whole topology when it starts (and ``lhcie bus init`` / the Helm pre-install
Job does so before any service runs), so an event published before its consumer first starts waits in
that consumer's queue instead of being dropped.
"""

from __future__ import annotations

from shared.bus.base import QueueSpec
from shared.events import RoutingKey

INTAKE = QueueSpec(
    "intake.documents",
    (RoutingKey.DOCUMENT_STORED, RoutingKey.DOCUMENT_REJECTED, "policy.#"),
)
# Storage and notification also hear of superseded and withdrawn documents: storage answers 410 for their
# content, notification tells subscribers.
LIFECYCLE = (RoutingKey.DOCUMENT_SUPERSEDED, RoutingKey.DOCUMENT_WITHDRAWN)
STORAGE = QueueSpec("storage.documents", (RoutingKey.DOCUMENT_RECEIVED, *LIFECYCLE, "policy.#"))
# Notification also tells care plan subscribers of a plan's new version and bed managers of repatriations.
NOTIFICATION = QueueSpec(
    "notification.documents",
    (
        RoutingKey.DOCUMENT_STORED,
        *LIFECYCLE,
        "policy.#",
        RoutingKey.CAREPLAN_CREATED,
        RoutingKey.CAREPLAN_UPDATED,
        RoutingKey.TRANSFER_REQUESTED,
        RoutingKey.TRANSFER_UPDATED,
        RoutingKey.TRANSFER_ESCALATED,
    ),
)
AUDIT = QueueSpec("audit.events", ("#",))
# Agreements does not own documents; it keeps who holds records about each patient from these.
AGREEMENTS = QueueSpec("agreements.documents", (RoutingKey.DOCUMENT_STORED,))

ALL_QUEUES: tuple[QueueSpec, ...] = (INTAKE, STORAGE, NOTIFICATION, AUDIT, AGREEMENTS)

# The care service (issue 18) keeps its own replica of the sharing policy.
CARE = QueueSpec("care.events", ("policy.#",))
ALL_QUEUES += (CARE,)

# Not a queue: what each notification replica watches (``Bus.watch``: an exclusive, auto-delete queue of
# its own on RabbitMQ, gone with the process) to wake its live streams when another replica changes an alert.
NOTIFICATION_WATCH = ("alert.*",)
