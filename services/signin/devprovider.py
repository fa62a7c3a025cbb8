"""The embedded run's development OpenID provider: the demo people and the grants it hands out. It stands
in for NHS CIS2 and NHS login so that ``make run`` signs people in with no set-up; a deployment configures
a real provider instead (``LHCIE_OIDC_ISSUER``), and then it is not mounted.

It supports what the exchange's own sign-in uses (authorization code with PKCE S256 for one public
client, rotated refresh tokens, userinfo) and nothing more. Its HTTP side is routes/dev.py.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc7636 import create_s256_code_challenge

CODE_SECONDS = 60
ACCESS_SECONDS = 900
REFRESH_SECONDS = 12 * 3600


@dataclass(frozen=True)
class DemoPerson:
    sub: str
    name: str
    org: str
    role: str
    purpose: str
    mdt: str | None = None
    patient: str | None = None
    job: str = ""

    def claims(self) -> dict[str, Any]:
        found = {"sub": self.sub, "name": self.name, "org": self.org, "role": self.role, "purpose": self.purpose}
        if self.mdt:
            found["mdt"] = self.mdt
        if self.patient:
            found["patient"] = self.patient
        return found


# Matches the embedded run's demo data (services/agreements/demo.py).
PEOPLE = (
    DemoPerson(
        "smith-a",
        "Dr A. Smith",
        "RJ1",
        "mdt-coordinator",
        "cancer-care",
        mdt="rj1-lung",
        job="MDT coordinator, Guy's and St Thomas' lung cancer MDT",
    ),
    DemoPerson(
        "okafor-c",
        "C. Okafor",
        "RRV",
        "mdt-coordinator",
        "cancer-care",
        mdt="rrv-haematology",
        job="MDT coordinator, UCLH haematological cancer MDT",
    ),
    DemoPerson("patel-r", "Dr R. Patel", "RJ1", "clinician", "direct-care", job="Consultant, Guy's and St Thomas'"),
    DemoPerson("jones-m", "M. Jones", "RAL", "dcc-admin", "direct-care", job="Data controller, Royal Free"),
    DemoPerson("evans-j", "J. Evans", "RJ1", "dcc-admin", "direct-care", job="Data controller, Guy's and St Thomas'"),
    DemoPerson(
        "brown-s",
        "S. Brown",
        "NHSLOGIN",
        "patient",
        "direct-care",
        patient="9000000009",
        job="Patient (NHS number 900 000 0009)",
    ),
    # The demo grant (services/agreements/demo.py) authorises this subject, as `lhcie token --role carer` does.
    DemoPerson(
        "carer@NHSLOGIN", "T. Brown", "NHSLOGIN", "carer", "direct-care", patient="9000000009", job="Carer of S. Brown"
    ),
)
BY_SUB = {p.sub: p for p in PEOPLE}


@dataclass
class Grant:
    person: DemoPerson
    expires: float
    nonce: str | None = None
    challenge: str | None = None
    redirect_uri: str | None = None


class DevProvider:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.codes: dict[str, Grant] = {}
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, Grant] = {}

    @staticmethod
    def _take(table: dict[str, Grant], key: str) -> Grant | None:
        now = time.time()
        for stale in [k for k, g in table.items() if g.expires <= now]:
            del table[stale]
        return table.pop(key, None)

    def authorize(self, person: DemoPerson, *, nonce: str | None, challenge: str, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(32)
        self.codes[code] = Grant(person, time.time() + CODE_SECONDS, nonce, challenge, redirect_uri)
        return code

    def redeem(self, code: str, *, redirect_uri: str, verifier: str) -> Grant | None:
        """The grant for a code, once, when the PKCE verifier and redirect URI match."""
        grant = self._take(self.codes, code)
        if grant is None or grant.redirect_uri != redirect_uri or not verifier:
            return None
        return grant if create_s256_code_challenge(verifier) == grant.challenge else None

    def renew(self, refresh_token: str) -> Grant | None:
        return self._take(self.refresh, refresh_token)  # rotated: each refresh token is used once

    def issue(self, grant: Grant) -> tuple[str, str, int]:
        """A new access token and refresh token for the grant's person, and the access token's life."""
        access, refresh, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        self.access[access] = Grant(grant.person, now + ACCESS_SECONDS)
        self.refresh[refresh] = Grant(grant.person, now + REFRESH_SECONDS)
        return access, refresh, ACCESS_SECONDS

    def userinfo(self, access_token: str) -> dict[str, Any] | None:
        grant = self.access.get(access_token)
        return grant.person.claims() if grant and grant.expires > time.time() else None
