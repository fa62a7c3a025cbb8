"""Care's collections and indexes as data, for ``lhcie store init`` (careplans.py, transfers.py, discharges.py
and shared/timers.py open them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "careplans": (Index(("patient",)),),
    # Every version of every plan, for _history and vread.
    "careplan_versions": (Index(("plan_id", "version")),),
    "transfers": (Index(("receiver", "state")), Index(("sender", "state"))),
    "discharge_summaries": (Index(("key",), unique=True),),
    "discharge_deliveries": (Index(("recipient", "delivered_at")), Index(("summary_id",))),
    "timers": (Index(("status", "due")), Index(("subject",))),
}
