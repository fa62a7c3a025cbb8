"""Sign-in settings (``LHCIE_OIDC_*``): the provider, the client, and which claims carry what."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.signin.client_key import ClientKey

KEY_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class SignInSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LHCIE_OIDC_", extra="ignore")

    # The provider's issuer URL (discovery at <issuer>/.well-known/openid-configuration). Unset: the
    # embedded development provider at <exchange>/dev-oidc, which only the embedded issuer can back.
    issuer: str | None = None
    client_id: str = "lhcie-console"
    # The client secret by reference (a mounted Kubernetes Secret); unset: a public client (PKCE only).
    client_secret_file: Path | None = None
    # Or a private key (PEM, RSA or EC; a mounted Secret) for private_key_jwt, the only client
    # authentication NHS login accepts; its key id as registered in the public JWKS, and the algorithm.
    client_key_file: Path | None = None
    client_key_id: str | None = None
    client_key_alg: str = "RS512"
    scopes: str = "openid profile"
    # The exchange's public base URL for the redirect URI; unset: taken from the request (one host).
    public_url: str | None = None
    # Claim names (a dotted path reaches into nested claims, e.g. "nhsid_nrbac_roles.0.org_code").
    org_claim: str = "org"
    role_claim: str = "role"
    purpose_claim: str = "purpose"
    # Several claims separated by spaces are joined ("given_name family_name" for NHS login).
    name_claim: str = "name"
    mdt_claim: str = "mdt"
    patient_claim: str = "patient"
    # Providers that list a person's roles and say which one they chose (NHS CIS2: nhsid_nrbac_roles and
    # selected_roleid): org_claim and role_claim are then read inside the chosen entry.
    roles_claim: str | None = None
    selected_role_claim: str | None = None
    role_id_field: str = "person_roleid"
    # A provider's role codes mapped to the exchange's roles, e.g. '{"R8000": "clinician"}'; a code such
    # as "S8000:G8000:R8000" also matches by any one of its parts.
    role_map: dict[str, str] = Field(default_factory=dict)
    # For providers that carry no organisation or role (NHS login: every person is a patient).
    default_org: str | None = None
    default_role: str | None = None
    # How long an exchange token lives; the console renews it before then. The sign-in session itself
    # lasts as long as the provider keeps refreshing it, and at most session_hours.
    token_ttl_seconds: int = Field(600, ge=10, le=3600)
    session_hours: int = Field(12, ge=1, le=24)

    @model_validator(mode="after")
    def _one_client_authentication(self) -> SignInSettings:
        if self.client_secret_file is not None and self.client_key_file is not None:
            raise ValueError("set LHCIE_OIDC_CLIENT_SECRET_FILE or LHCIE_OIDC_CLIENT_KEY_FILE, not both")
        if self.client_key_alg not in KEY_ALGS:
            raise ValueError(f"LHCIE_OIDC_CLIENT_KEY_ALG must be one of {', '.join(KEY_ALGS)}")
        return self

    def client_key(self) -> ClientKey | None:
        if self.client_key_file is None:
            return None
        try:
            return ClientKey.load(self.client_key_file.read_bytes(), key_id=self.client_key_id, alg=self.client_key_alg)
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"LHCIE_OIDC_CLIENT_KEY_FILE: {exc}") from None

    def client_secret(self) -> str | None:
        if self.client_secret_file is None:
            return None
        return self.client_secret_file.read_text().strip()
