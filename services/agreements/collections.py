"""Agreements' collections and indexes as data, for ``lhcie store init`` (services/agreements/registry.py and
patients.py open them)."""

from __future__ import annotations

from shared.store import Index
from shared.store.schema import EVERY_SERVICE, Schema

COLLECTIONS: Schema = {
    **EVERY_SERVICE,
    "organisations": (),
    "careteams": (Index(("organisation",)),),
    "agreements": (Index(("parties",)), Index(("status",))),
    "carer_grants": (Index(("patient_nhs_number",)), Index(("carer_subject",))),
    "preferences": (),
    "details": (),
    "record_holders": (Index(("patient",)),),
}
