"""The services by name (the five, and care)."""

from __future__ import annotations

from services.agreements.app import SPEC as AGREEMENTS
from services.audit.app import SPEC as AUDIT
from services.care.app import SPEC as CARE
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION
from services.signin.app import SPEC as SIGNIN
from services.storage.app import SPEC as STORAGE
from shared.service import ServiceSpec

# Agreements first: in the one-process run its demo data is announced before the others consume.
SPECS: dict[str, ServiceSpec] = {s.name: s for s in (AGREEMENTS, INTAKE, STORAGE, NOTIFICATION, AUDIT, CARE)}
# People's sign-in (OpenID Connect) and the development provider: mounted by the embedded run, which holds
# the token signing key that signed-in sessions need. Not a service of its own in the chart (yet).
EMBEDDED_EXTRAS: tuple[ServiceSpec, ...] = (SIGNIN,)
