"""Sign-in as a mountable part of an app: the embedded run (``lhcie run``) adds it beside the five services."""

from __future__ import annotations

from services.signin.routes import install
from shared.service import ServiceSpec

SPEC = ServiceSpec(name="signin", install=lambda app: install(app))
