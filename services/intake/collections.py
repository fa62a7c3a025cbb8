"""Intake's collections and indexes as data, for ``lhcie store init`` (services/intake/registry.py opens them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "documents": (
        Index(("patient", "status", "received_at")),
        Index(("custodian",)),
        Index(("submission_id",)),
        Index(("bundle_id",)),
        Index(("master_key",), unique=True),
        Index(("idempotency_key",), unique=True),
    ),
    "folders": (Index(("org",)),),
}
