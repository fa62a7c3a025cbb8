"""Storage's collections and indexes as data, for ``lhcie store init`` (services/storage/domain.py opens them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "objects": (Index(("facts.patient_nhs_number",)),),
}
