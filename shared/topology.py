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
STORAGE = QueueSpec("storage.documents", (RoutingKey.DOCUMENT_RECEIVED, "policy.#"))
NOTIFICATION = QueueSpec("notification.documents", (RoutingKey.DOCUMENT_STORED, "policy.#"))
AUDIT = QueueSpec("audit.events", ("#",))

ALL_QUEUES: tuple[QueueSpec, ...] = (INTAKE, STORAGE, NOTIFICATION, AUDIT)
