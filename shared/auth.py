"""Bearer tokens: verification against a JWKS, the caller they describe, and the embedded issuer.

A token carries the caller's organisation (ODS code), role, SMART-style scopes and, for MDT staff, the
MDT (CareTeam id). Services trust only what a verified token says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.files import open_private, private_dir

log = logging.getLogger(__name__)

ALGORITHMS = ["ES256", "RS256"]
# The longest a token may be valid (exp - iat), unless LHCIE_JWT_MAX_LIFETIME_SECONDS says otherwise.
DEFAULT_MAX_LIFETIME = 24 * 3600
# Tokens verified and remembered per process (see TokenVerifier): a bound on memory, not on correctness.
VERIFIED_TOKENS = 1024
ROLES = (
    "system",
    "mdt-coordinator",
    "clinician",
    "dcc-admin",
    "patient",
    "carer",
    "auditor",
    "exchange-operator",
    "bed-manager",
)

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
    # A trust's bed managers (issue 18): the repatriations coming in (read only) and their alerts.
    "bed-manager": (
        "user/Communication.rus",
        "user/Task.rs",
        "user/Organization.rs",
    ),
}


class Unauthorized(Exception):
    """No token, or one that fails verification (401); ``reason_code`` goes to the access.denied record."""

    def __init__(self, message: str, *, reason_code: str = "invalid-token") -> None:
        super().__init__(message)
        self.reason_code = reason_code


class Forbidden(Exception):
    """A valid token that does not allow this operation (403)."""

    def __init__(self, message: str, *, reason_code: str = "scope") -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True)
class Caller:
    org: str
    role: str
    subject: str
    scopes: frozenset[str]
    mdt: str | None = None
    patient: str | None = None
    # The purpose of use the token states (IHE IUA / SMART ``purpose_of_use``); None: the role's default.
    purpose: str | None = None
    # The person's display name from sign-in ("Dr A. Smith"); system tokens have none.
    name: str | None = None

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
            private_dir(self._path.parent)
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = self._path.with_suffix(f".{uuid.uuid4().hex}.tmp")
            fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
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
        purpose: str | None = None,
        name: str | None = None,
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
        if purpose:
            claims[PURPOSE_CLAIM] = check_purpose(purpose)
        if name:
            claims["name"] = name
        return self.sign(claims)

    def sign(self, claims: dict[str, Any]) -> str:
        """Signs any claims with this key (the development OpenID provider's ID tokens)."""
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})


class KeySet:
    """A JWKS by key id. One read from a URL (``https://`` or ``file://``) is re-read when a token names a
    key it does not hold (the provider rotated its keys), at most once every ``min_refetch`` seconds so that
    tokens with made-up key ids cannot turn into a flood of fetches, and in any case once ``max_age`` old."""

    def __init__(
        self,
        jwks: dict[str, Any] | None = None,
        *,
        url: str | None = None,
        min_refetch: float = 30.0,
        max_age: float = 3600.0,
    ) -> None:
        self.url = url
        self._min_refetch = min_refetch
        self._max_age = max_age
        self._keys: dict[str | None, jwt.PyJWK] = _parse_jwks(jwks or {})
        self._fetched = time.monotonic() if jwks is not None else float("-inf")
        self._lock = asyncio.Lock()

    @property
    def keys(self) -> dict[str | None, jwt.PyJWK]:
        return self._keys

    async def load(self) -> None:
        if self.url is None:
            return
        async with self._lock:
            self._keys = _parse_jwks(await load_jwks(self.url))
            self._fetched = time.monotonic()

    async def refresh_for(self, kid: str | None) -> None:
        """Re-read the set if ``kid`` is unknown (or the set is old) and the last read is not too recent."""
        if self.url is None:
            return
        age = time.monotonic() - self._fetched
        if (kid in self._keys or kid is None) and age < self._max_age:
            return
        if age < self._min_refetch:
            return
        async with self._lock:
            if time.monotonic() - self._fetched < self._min_refetch:
                return  # another request refreshed it while this one waited
            try:
                self._keys = _parse_jwks(await load_jwks(self.url))
            except Exception as exc:  # keep the keys we have; the provider may be down for a moment
                log.warning("auth.jwks_refresh_failed reason=%s", type(exc).__name__, extra={"code": "AUTH002"})
            self._fetched = time.monotonic()


def _parse_jwks(jwks: dict[str, Any]) -> dict[str | None, jwt.PyJWK]:
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            log.warning("auth.jwks_key_skipped kid=%s", entry.get("kid"), extra={"code": "AUTH001"})
            continue
        if key.algorithm_name in ALGORITHMS:
            keys[entry.get("kid")] = key
    return keys


@dataclass(frozen=True)
class _Verified:
    """A verified token's caller, until its ``exp``, while the key set it was verified against stands."""

    caller: Caller
    exp: int
    kid: str | None
    keys: dict[str | None, jwt.PyJWK]


class TokenVerifier:
    def __init__(
        self, jwks: dict[str, Any] | KeySet, *, issuer: str, audience: str, max_lifetime: int = DEFAULT_MAX_LIFETIME
    ) -> None:
        self.keyset = jwks if isinstance(jwks, KeySet) else KeySet(jwks)
        self._issuer = issuer
        self._audience = audience
        self._max_lifetime = max_lifetime
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_jwks_url(cls, url: str, *, issuer: str, audience: str) -> TokenVerifier:
        """``file://`` paths are read here; an ``http(s)`` JWKS is fetched by ``load_jwks``."""
        if not url.startswith("file://"):
            raise ValueError("use load_jwks for http(s) JWKS URLs")
        return cls(json.loads(Path(url.removeprefix("file://")).read_text()), issuer=issuer, audience=audience)

    async def prepare(self, authorization: str | None) -> None:
        """Before ``verify``: fetch the key set again when the token names a key it does not hold."""
        token = _bearer(authorization, quiet=True)
        if token is None:
            return
        known = self._still_verified(token)
        if known is not None:
            # Its key was in the set it was verified against and the set has not changed since: only the
            # set's age can call for a fetch (``max_age``: a key withdrawn at the provider goes).
            await self.keyset.refresh_for(known.kid)
            return
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return
        await self.keyset.refresh_for(kid if isinstance(kid, str) else None)

    def _key_for(self, header: dict[str, Any]) -> jwt.PyJWK:
        keys = self.keyset.keys
        kid = header.get("kid")
        if kid is None:
            # Which key signed it must not be guessed: only a set of one key leaves no choice.
            if len(keys) != 1:
                raise Unauthorized("the token names no signing key ('kid')", reason_code="no-kid")
            return next(iter(keys.values()))
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("the token was signed with an unknown key", reason_code="unknown-key")
        return key

    def verify(self, authorization: str | None) -> Caller:
        token = _bearer(authorization)
        assert token is not None
        known = self._still_verified(token)
        if known is not None:
            return known.caller
        try:
            header = jwt.get_unverified_header(token)
            key = self._key_for(header)
            if header.get("alg") != key.algorithm_name:
                raise Unauthorized("the token's algorithm does not match its key", reason_code="wrong-algorithm")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", reason_code="token-expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not valid ({type(exc).__name__})") from None
        except (TypeError, ValueError, KeyError):  # a hostile header or key can upset the crypto layer
            raise Unauthorized("the token is not valid") from None
        self._check_lifetime(claims)
        org, role = claims.get("org"), claims.get("role")
        if not isinstance(org, str) or not isinstance(role, str) or role not in ROLES:
            raise Unauthorized("the token lacks a valid 'org' or 'role' claim", reason_code="invalid-claims")
        verified = Caller(
            org=org,
            role=role,
            subject=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            mdt=claims.get("mdt"),
            patient=claims.get("patient"),
            purpose=purpose_claim(claims),
            name=claims["name"] if isinstance(claims.get("name"), str) else None,
        )
        self._remember(token, _Verified(verified, int(claims["exp"]), header.get("kid"), self.keyset.keys))
        return verified

    def _still_verified(self, token: str) -> _Verified | None:
        """A token verified before, by these exact bytes, that would verify again now.

        A signature, an issuer, an audience, an algorithm and the claims cannot change for the same bytes,
        and ``iat``, ``nbf`` and the lifetime limit, once met, stay met as time passes: what can change is
        the clock against ``exp`` and the key set. So an entry holds while the token has not expired (as
        PyJWT judges it: ``exp <= now`` is expired) and the set is the very one it was verified against (a
        fetch of the JWKS replaces the set, and every entry verified against the old one is checked again
        in full: a key withdrawn at the provider refuses its tokens from then on). Tokens are stateless
        here: nothing revokes one before its ``exp`` but its key leaving the set.
        """
        known = self._verified.get(token)
        if known is None:
            return None
        if known.keys is self.keyset.keys and time.time() < known.exp:
            return known
        del self._verified[token]
        return None

    def _remember(self, token: str, verified: _Verified) -> None:
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest: tokens are used in bursts
        self._verified[token] = verified

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise Unauthorized("the token's 'exp' and 'iat' must be numbers", reason_code="invalid-claims")
        # Both measures: a token can claim a recent 'iat' and still be valid for years.
        if exp - iat > self._max_lifetime or exp - time.time() > self._max_lifetime:
            raise Unauthorized(
                f"the token is valid for longer than {self._max_lifetime} seconds", reason_code="token-lifetime"
            )


def _bearer(authorization: str | None, *, quiet: bool = False) -> str | None:
    if not authorization:
        if quiet:
            return None
        raise Unauthorized("no bearer token", reason_code="no-token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        if quiet:
            return None
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", reason_code="bad-scheme")
    return token.strip()


async def load_jwks(url: str) -> dict[str, Any]:
    if url.startswith("file://"):
        keys: dict[str, Any] = json.loads(await asyncio.to_thread(Path(url.removeprefix("file://")).read_text))
        return keys
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as response:
        response.raise_for_status()
        fetched: dict[str, Any] = await response.json(content_type=None)
        return fetched


# --- Purpose of use (issue 18) ----------------------------------------------------------------------
# A token states the purpose its requests serve, as IHE IUA and SMART carry it: ``purpose_of_use`` is a
# code (or a Coding with that code). Without it the policy uses the role's default (shared.policy).
PURPOSE_CLAIM = "purpose_of_use"
PURPOSES_OF_USE = ("direct-care", "cancer-care", "end-of-life-care", "transfer-of-care")


def check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES_OF_USE:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES_OF_USE)}")
    return purpose


def purpose_claim(claims: dict[str, Any]) -> str | None:
    """The stated purpose; an unknown one is refused, or a direct-care ISA would cover anything."""
    value = claims.get(PURPOSE_CLAIM)
    if isinstance(value, dict):
        value = value.get("code")
    if value is None:
        return None
    if not isinstance(value, str) or value not in PURPOSES_OF_USE:
        raise Unauthorized(f"the token's {PURPOSE_CLAIM} must be one of {', '.join(PURPOSES_OF_USE)}")
    return value


# Care plans, transfers and discharge summaries (the care service): scopes added to each role's defaults.
CARE_SCOPES: dict[str, tuple[str, ...]] = {
    "system": ("system/CarePlan.crus", "system/Task.crus", "system/Bundle.crus", "system/Questionnaire.rs"),
    "clinician": ("user/CarePlan.crus", "user/Task.crus", "user/Bundle.crus", "user/Questionnaire.rs"),
    "patient": ("patient/CarePlan.crus",),
}
for _role, _scopes in CARE_SCOPES.items():
    DEFAULT_SCOPES[_role] = DEFAULT_SCOPES[_role] + _scopes
