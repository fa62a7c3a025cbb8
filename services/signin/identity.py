"""From a provider's claims to the exchange's idea of a person: organisation, role, name, MDT, patient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.signin.settings import SignInSettings
from shared.auth import ROLES


class SignInRefused(Exception):
    """The provider signed the person in, but its claims do not make an exchange identity."""


@dataclass(frozen=True)
class Person:
    subject: str
    name: str
    org: str
    role: str
    purpose: str | None = None
    mdt: str | None = None
    patient: str | None = None


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path: ``a.b`` is ``claims["a"]["b"]``, ``a.0`` the first of a list."""
    value: Any = claims
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _text(claims: dict[str, Any], path: str) -> str | None:
    value = claim(claims, path)
    return str(value) if isinstance(value, (str, int)) and str(value).strip() else None


def _selected_role(claims: dict[str, Any], settings: SignInSettings) -> dict[str, Any]:
    """The role entry the person chose at sign-in, or the claims themselves for flat providers."""
    if not settings.roles_claim:
        return claims
    roles = claim(claims, settings.roles_claim)
    chosen = _text(claims, settings.selected_role_claim) if settings.selected_role_claim else None
    entries = [r for r in roles if isinstance(r, dict)] if isinstance(roles, list) else []
    if chosen is not None:
        entries = [r for r in entries if str(r.get(settings.role_id_field)) == chosen]
    if len(entries) != 1:
        raise SignInRefused(
            "choose one role when signing in: the provider's token does not say which role "
            "(set LHCIE_OIDC_ROLES_CLAIM and LHCIE_OIDC_SELECTED_ROLE_CLAIM)"
        )
    return entries[0]


def _exchange_role(raw: str | None, settings: SignInSettings) -> str | None:
    if raw is None:
        return None
    if raw in settings.role_map:
        return settings.role_map[raw]
    mapped = {settings.role_map[part] for part in raw.split(":") if part in settings.role_map}
    return mapped.pop() if len(mapped) == 1 else raw


def person_from_claims(claims: dict[str, Any], settings: SignInSettings) -> Person:
    role_claims = _selected_role(claims, settings)
    org = _text(role_claims, settings.org_claim) or settings.default_org
    role = _exchange_role(_text(role_claims, settings.role_claim) or settings.default_role, settings)
    if not org:
        raise SignInRefused(f"the provider's token has no '{settings.org_claim}' claim (set LHCIE_OIDC_ORG_CLAIM)")
    if role not in ROLES:
        raise SignInRefused(
            f"the provider's '{settings.role_claim}' claim is not an exchange role (set LHCIE_OIDC_ROLE_CLAIM "
            "or LHCIE_OIDC_ROLE_MAP)"
        )
    subject = str(claims["sub"])
    name = " ".join(filter(None, (_text(claims, part) for part in settings.name_claim.split())))
    return Person(
        subject=subject,
        name=name or subject,
        org=org,
        role=role,
        purpose=_text(claims, settings.purpose_claim),
        mdt=_text(role_claims, settings.mdt_claim) or _text(claims, settings.mdt_claim),
        patient=_text(claims, settings.patient_claim),
    )
