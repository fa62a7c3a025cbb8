"""Audit's collections and indexes as data, for ``lhcie store init`` (services/audit/chain.py and domain.py
open them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "audit_records": (
        Index(("seq",), unique=True),
        Index(("event_id",), unique=True),
        Index(("entities",)),
        Index(("orgs",)),
        Index(("patient",)),
        Index(("date",)),
        Index(("event_type",)),
        Index(("agent_orgs",)),
    ),
    "audit_checkpoints": (Index(("seq",), unique=True),),
    # Held record -> its custodian, so a read naming only the reader still involves the holder.
    "audit_custodians": (),
}
