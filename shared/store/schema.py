"""Collections and their indexes as data: what ``lhcie store init`` creates for a service without
building it.

Every service's ``collections.py`` starts from ``EVERY_SERVICE`` (the parts ``shared/`` gives each service)
and adds its own. The code still names its collections where it opens them; a unit test
(tests/unit/test_store_schema.py) holds these declarations equal to what each service opens.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.store.base import Index

Schema = Mapping[str, tuple[Index, ...]]

EVERY_SERVICE: Schema = {
    # ServiceContext's inbox (events applied once) and the transactional outbox (shared/outbox.py).
    "inbox": (),
    "outbox": (Index(("seq",)),),
    # The policy view each service keeps from policy.* events (shared/policy.py, PolicyView).
    "policy_organisations": (),
    "policy_careteams": (Index(("organisation",)),),
    "policy_agreements": (Index(("parties",)),),
    "policy_carer_grants": (Index(("patient_nhs_number",)),),
    "policy_preferences": (),
}
