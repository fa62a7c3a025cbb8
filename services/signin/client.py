"""The relying party: Authlib's OAuth 2 client runs the authorization code flow with PKCE (S256), joserfc
checks the ID token against the provider's published keys. The client proves itself at the token endpoint
with a secret (``client_secret_basic``), a private key (``private_key_jwt``, RFC 7523: what NHS login
requires) or not at all (a public client)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from services.signin.client_key import ClientKey
from services.signin.identity import SignInRefused

# Discovery documents and keys are fetched again after this, so a provider's key rotation is picked up.
METADATA_TTL = 300.0
CLOCK_LEEWAY = 60
# A client assertion is used once, at once: a short life limits what a captured one is worth.
ASSERTION_SECONDS = 60


class _PrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc]  # Authlib ships no type hints
    """Authlib's ``private_key_jwt`` with a short-lived assertion (its default lives an hour)."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            claims=self.claims,
            header=self.headers,
            alg=self.alg,
            expires_in=ASSERTION_SECONDS,
        )


@dataclass
class Pending:
    """What the callback needs to finish one sign-in: kept server-side, keyed by ``state``."""

    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    next_path: str
    created: float = field(default_factory=time.monotonic)


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered with an error (503)."""


class OidcClient:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        scopes: str,
        client_key: ClientKey | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._key = client_key
        self._scopes = scopes
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched = 0.0

    def _client(self, redirect_uri: str | None = None, *, scope: bool = True) -> AsyncOAuth2Client:
        if self._key is not None:
            secret: Any = self._key.key
            method = "private_key_jwt"
        else:
            secret, method = self._secret, "client_secret_basic" if self._secret else "none"
        client = AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=secret,
            scope=self._scopes if scope else None,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            timeout=10,
        )
        if self._key is not None:
            # The assertion's audience is the token endpoint it is sent to (Authlib's default).
            client.register_client_auth_method(
                _PrivateKeyJWT(alg=self._key.alg, headers={"kid": self._key.key_id} if self._key.key_id else None)
            )
        return client

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched > METADATA_TTL:
            try:
                async with self._client() as http:
                    found = (
                        (
                            await http.request(
                                "GET", f"{self.issuer}/.well-known/openid-configuration", withhold_token=True
                            )
                        )
                        .raise_for_status()
                        .json()
                    )
                    keys = (await http.request("GET", found["jwks_uri"], withhold_token=True)).raise_for_status().json()
            except Exception as exc:
                raise ProviderUnavailable(f"the sign-in provider did not answer ({type(exc).__name__})") from None
            if found.get("issuer", "").rstrip("/") != self.issuer:
                raise ProviderUnavailable("the sign-in provider's discovery document names another issuer")
            self._metadata, self._keys, self._fetched = found, KeySet.import_key_set(keys), time.monotonic()
        return self._metadata

    async def begin(self, *, redirect_uri: str, next_path: str) -> tuple[str, Pending]:
        meta = await self.metadata()
        pending = Pending(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            redirect_uri=redirect_uri,
            next_path=next_path,
        )
        async with self._client(redirect_uri) as http:
            url, _ = http.create_authorization_url(
                meta["authorization_endpoint"],
                state=pending.state,
                nonce=pending.nonce,
                code_verifier=pending.code_verifier,
            )
        return url, pending

    async def finish(self, pending: Pending, *, code: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The provider's tokens and the person's claims (ID token, completed from userinfo)."""
        meta = await self.metadata()
        try:
            async with self._client(pending.redirect_uri) as http:
                token = dict(
                    await http.fetch_token(meta["token_endpoint"], code=code, code_verifier=pending.code_verifier)
                )
                claims = self._id_claims(token, nonce=pending.nonce)
                if meta.get("userinfo_endpoint"):
                    info = (await http.get(meta["userinfo_endpoint"])).raise_for_status().json()
                    if info.get("sub") == claims["sub"]:  # OIDC Core 5.3.2: never merge another subject
                        claims = {**info, **claims}
        except (SignInRefused, ProviderUnavailable):
            raise
        except Exception as exc:
            raise SignInRefused(f"the provider refused the sign-in ({type(exc).__name__})") from None
        return token, claims

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            # No scope on refresh (RFC 6749 6): the grant's own; a provider that dropped one (offline_access
            # without consent) would refuse a refresh asking for it again.
            async with self._client(scope=False) as http:
                return dict(await http.refresh_token(meta["token_endpoint"], refresh_token=refresh_token))
        except Exception as exc:
            raise SignInRefused(f"the provider would not renew the session ({type(exc).__name__})") from None

    def _id_claims(self, token: dict[str, Any], *, nonce: str) -> dict[str, Any]:
        if "id_token" not in token:
            raise SignInRefused("the provider returned no ID token")
        assert self._keys is not None
        try:
            decoded = jwt.decode(token["id_token"], self._keys, algorithms=["ES256", "RS256", "PS256", "EdDSA"])
            jwt.JWTClaimsRegistry(
                leeway=CLOCK_LEEWAY,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"the provider's ID token is not valid ({type(exc).__name__})") from None
        return dict(decoded.claims)
