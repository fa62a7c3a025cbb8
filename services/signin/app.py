"""Sign-in as a mountable part of an app: the embedded run (``lhcie run``) adds it beside the five services."""

from __future__ import annotations

from services.signin.routes import install
from shared.service import ServiceSpec

# How a person gets a token, so none of it can need one: /signin, its callback and session, and the
# development OpenID provider.
SPEC = ServiceSpec(
    name="signin",
    install=lambda app: install(app),
    public_paths=frozenset({"/signin"}),
    public_prefixes=("/signin/", "/dev-oidc/"),
)
