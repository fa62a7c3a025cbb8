"""Bearer tokens: verification against a JWKS, the caller they describe, and the embedded issuer.

A token carries the caller's organisation (ODS code), role, SMART-style scopes and, for MDT staff, the
MDT (CareTeam id). Services trust only what a verified token says.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHMS = ["ES256", "RS256"]
ROLES = ("system", "mdt-coordinator", "clinician", "dcc-admin", "patient", "carer", "auditor", "exchange-operator")

# SMART v2 scopes each role receives from the embedded issuer (``lhcie token``).
DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "system": (
        "system/DocumentReference.crus",
        "system/Binary.r",
        "system/Communication.rs",
        "system/Organization.rs",
        "system/CareTeam.rs",
        "system/Contract.rs",
        "system/AuditEvent.rs",
    ),
    "mdt-coordinator": (
        "user/DocumentReference.rs",
        "user/Binary.r",
        "user/Communication.rus",
        "user/Organization.rs",
        "user/CareTeam.rs",
    ),
    "clinician": (
        "user/DocumentReference.crs",
        "user/Binary.r",
        "user/Communication.rs",
        "user/Organization.rs",
        "user/CareTeam.rs",
    ),
    "dcc-admin": (
        "user/Organization.cruds",
        "user/CareTeam.cruds",
        "user/Contract.cruds",
        "user/AuditEvent.rs",
        "user/Consent.rs",
    ),
    "patient": ("patient/DocumentReference.rs", "patient/Consent.cruds", "patient/AuditEvent.rs"),
    "carer": ("patient/DocumentReference.rs", "patient/AuditEvent.rs"),
    # An organisation's information-governance auditor: searches the audit records that involve it.
    "auditor": ("user/AuditEvent.rs", "user/Organization.rs"),
    # The exchange's own operations team: exchange-wide audit, every ISA's documents, $reconcile. Every
    # use of the role is itself audited; no organisation's staff hold it.
    "exchange-operator": (
        "user/AuditEvent.rs",
        "user/Organization.rs",
        "user/CareTeam.rs",
        "user/Contract.rs",
        "system/Communication.u",
    ),
}


class Unauthorized(Exception):
    """No token, or one that fails verification (401)."""


class Forbidden(Exception):
    """A valid token that does not allow this operation (403)."""


@dataclass(frozen=True)
class Caller:
    org: str
    role: str
    subject: str
    scopes: frozenset[str]
    mdt: str | None = None
    patient: str | None = None

    def allows(self, resource: str, action: str) -> bool:
        """SMART v2: ``<context>/<Resource>.<cruds>``; ``*`` matches any resource."""
        for scope in self.scopes:
            _, _, rest = scope.partition("/")
            name, _, perms = rest.partition(".")
            if name in (resource, "*") and (action in perms or perms in ("*", "write" if action in "cud" else "read")):
                return True
        return False

    def require(self, resource: str, action: str) -> None:
        if not self.allows(resource, action):
            raise Forbidden(f"the token's scopes do not allow {action!r} on {resource}")


def _b64url_coordinate(value: int) -> str:
    import base64

    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


class EmbeddedIssuer:
    """The embedded run's token issuer: an EC P-256 key kept in the data directory, created on first use."""

    def __init__(self, data_dir: Path, *, issuer: str, audience: str) -> None:
        self._path = data_dir / "issuer" / "signing-key.pem"
        self.issuer = issuer
        self.audience = audience
        self._key = self._load_or_create()
        self.kid = self._kid()

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        if not self._path.exists():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = self._path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            try:
                os.link(tmp, self._path)  # first writer wins when several processes start at once
            except FileExistsError:
                pass
            tmp.unlink()
        loaded = serialization.load_pem_private_key(self._path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        return loaded

    def _kid(self) -> str:
        import hashlib

        numbers = self._key.public_key().public_numbers()
        return hashlib.sha256(f"{numbers.x}:{numbers.y}".encode()).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": _b64url_coordinate(numbers.x),
                    "y": _b64url_coordinate(numbers.y),
                    "use": "sig",
                    "alg": "ES256",
                    "kid": self.kid,
                }
            ]
        }

    def mint(
        self,
        *,
        org: str,
        role: str,
        mdt: str | None = None,
        patient: str | None = None,
        subject: str | None = None,
        ttl: int = 3600,
        scopes: tuple[str, ...] | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or f"{role}@{org}",
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "org": org,
            "role": role,
            "scope": " ".join(scopes if scopes is not None else DEFAULT_SCOPES[role]),
        }
        if mdt:
            claims["mdt"] = mdt
        if patient:
            claims["patient"] = patient
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})


class TokenVerifier:
    def __init__(self, jwks: dict[str, Any], *, issuer: str, audience: str) -> None:
        self._keys = {k.get("kid"): jwt.PyJWK(k) for k in jwks.get("keys", [])}
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_jwks_url(cls, url: str, *, issuer: str, audience: str) -> TokenVerifier:
        """``file://`` paths are read here; an ``http(s)`` JWKS is fetched by ``load_jwks``."""
        if not url.startswith("file://"):
            raise ValueError("use load_jwks for http(s) JWKS URLs")
        return cls(json.loads(Path(url.removeprefix("file://")).read_text()), issuer=issuer, audience=audience)

    def verify(self, authorization: str | None) -> Caller:
        if not authorization:
            raise Unauthorized("no bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) or (next(iter(self._keys.values())) if len(self._keys) == 1 else None)
            if key is None:
                raise Unauthorized("the token was signed with an unknown key")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid ({type(exc).__name__})") from None
        org, role = claims.get("org"), claims.get("role")
        if not isinstance(org, str) or not isinstance(role, str) or role not in ROLES:
            raise Unauthorized("the token lacks a valid 'org' or 'role' claim")
        return Caller(
            org=org,
            role=role,
            subject=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            mdt=claims.get("mdt"),
            patient=claims.get("patient"),
        )


async def load_jwks(url: str) -> dict[str, Any]:
    if url.startswith("file://"):
        return json.loads(Path(url.removeprefix("file://")).read_text())
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.json(content_type=None)
