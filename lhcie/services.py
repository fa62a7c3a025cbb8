"""The services by name (the five, and care)."""

from __future__ import annotations

from services.agreements.app import SPEC as AGREEMENTS
from services.audit.app import SPEC as AUDIT
from services.care.app import SPEC as CARE
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION
from services.storage.app import SPEC as STORAGE
from shared.service import ServiceSpec

# Agreements first: in the one-process run its demo data is announced before the others consume.
SPECS: dict[str, ServiceSpec] = {s.name: s for s in (AGREEMENTS, INTAKE, STORAGE, NOTIFICATION, AUDIT, CARE)}
