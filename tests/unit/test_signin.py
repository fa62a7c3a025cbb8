"""Sign-in with OpenID Connect against the embedded development provider, over real HTTP: the
authorization code flow with PKCE (Authlib), the exchange token that names the person, silent renewal
and the plain 401 when renewal is refused, and the requests the flow must refuse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from lhcie.runner import build
from lhcie.services import SPECS
from services.signin.routes import DEV, SIGNINS
from shared.app_keys import RUNTIME
from shared.auth import TokenVerifier
from shared.config import Settings
from tests.helpers import free_port


@dataclass
class Served:
    url: str
    app: web.Application


@pytest.fixture
async def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    for name in ("ISSUER", "CLIENT_SECRET_FILE", "PUBLIC_URL"):
        monkeypatch.delenv(f"LHCIE_OIDC_{name}", raising=False)
    app = build(settings, list(SPECS))
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Served(f"http://127.0.0.1:{port}", app)
    await runner.cleanup()


def browser() -> aiohttp.ClientSession:
    # unsafe: keep cookies for an IP-address host, as a browser does for 127.0.0.1
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def authorize(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with http.get(f"{url}/signin?next=/console/", allow_redirects=False) as started:
        assert started.status == 302
        location = started.headers["Location"]
    assert location.startswith(f"{url}/dev-oidc/authorize?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def choose(http: aiohttp.ClientSession, url: str, params: dict[str, str], person: str) -> str:
    async with http.post(
        f"{url}/dev-oidc/authorize", data={**params, "person": person}, allow_redirects=False
    ) as chosen:
        assert chosen.status == 302, await chosen.text()
        return chosen.headers["Location"]


async def sign_in(http: aiohttp.ClientSession, url: str, person: str = "smith-a") -> dict[str, Any]:
    params = await authorize(http, url)
    callback = await choose(http, url, params, person)
    async with http.get(callback, allow_redirects=False) as finished:
        assert finished.status == 302, await finished.text()
        assert finished.headers["Location"] == "/console/"
    async with http.post(f"{url}/signin/session") as session:
        assert session.status == 200, await session.text()
        assert session.headers["Cache-Control"] == "no-store"
        return dict(await session.json())


async def test_a_person_signs_in_with_pkce_and_the_token_names_them(served: Served) -> None:
    async with browser() as http:
        params = await authorize(http, served.url)
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43 and params["nonce"] and params["state"]
        assert params["redirect_uri"] == f"{served.url}/signin/callback"
        async with http.get(f"{served.url}/dev-oidc/authorize", params=params) as page:
            listing = await page.text()
        for name in ("Dr A. Smith", "C. Okafor", "M. Jones", "S. Brown"):
            assert name in listing
        body = await sign_in(http, served.url)
        # The provider's own tokens stay on the server.
        assert set(body) == {
            "access_token",
            "token_type",
            "expires_in",
            "name",
            "org",
            "role",
            "purpose",
            "session_ends_at",
        }
        assert (body["name"], body["org"], body["role"], body["purpose"]) == (
            "Dr A. Smith",
            "RJ1",
            "mdt-coordinator",
            "cancer-care",
        )
        verifier: TokenVerifier = served.app[RUNTIME].verifier
        caller = verifier.verify(f"Bearer {body['access_token']}")
        assert (caller.subject, caller.name, caller.org, caller.role, caller.mdt) == (
            "smith-a",
            "Dr A. Smith",
            "RJ1",
            "mdt-coordinator",
            "rj1-lung",
        )

        # The token works on the API, and an acknowledgement names the person.
        async with http.get(
            f"{served.url}/fhir/Communication?recipient=CareTeam/rj1-lung",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        ) as alerts:
            assert alerts.status == 200


async def test_the_session_renews_silently_and_says_plainly_when_it_cannot(served: Served) -> None:
    async with browser() as http:
        first = await sign_in(http, served.url)
        [session] = list(served.app[SIGNINS]._sessions.values())
        old_refresh = session.tokens["refresh_token"]
        session.tokens["expires_at"] = 0  # the provider's access token has run out: renew with the refresh token
        async with http.post(f"{served.url}/signin/session") as renewed:
            assert renewed.status == 200
            assert (await renewed.json())["name"] == "Dr A. Smith"
        assert session.tokens["refresh_token"] != old_refresh  # rotated by the provider
        assert session.tokens["expires_at"] > 0
        assert first["access_token"]

        session.tokens["expires_at"] = 0
        served.app[DEV].refresh.clear()  # the provider ended the person's sign-in
        async with http.post(f"{served.url}/signin/session") as refused:
            assert refused.status == 401
            outcome = await refused.json()
        assert outcome["issue"][0]["diagnostics"] == "Your sign-in could not be renewed: sign in again."
        async with http.post(f"{served.url}/signin/session") as after:
            assert after.status == 401  # the session is gone, not retried with the dead refresh token


async def test_a_callback_not_started_by_this_browser_is_refused(served: Served) -> None:
    async with browser() as http:
        params = await authorize(http, served.url)
        callback = await choose(http, served.url, params, "smith-a")
    # Another browser (no state cookie) cannot complete it.
    async with browser() as other, other.get(callback, allow_redirects=False) as planted:
        assert planted.status == 400
        outcome = await planted.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["state"]


async def test_the_provider_refuses_a_wrong_code_verifier_and_a_replayed_code(served: Served) -> None:
    async with browser() as http:
        params = await authorize(http, served.url)
        code = parse_qs(urlsplit(await choose(http, served.url, params, "smith-a")).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "lhcie-console",
            "redirect_uri": params["redirect_uri"],
            "code_verifier": "x" * 64,
        }
        async with http.post(f"{served.url}/dev-oidc/token", data=form) as wrong:
            assert (wrong.status, await wrong.json()) == (400, {"error": "invalid_grant"})
        async with http.post(f"{served.url}/dev-oidc/token", data=form) as replayed:
            assert (replayed.status, await replayed.json()) == (400, {"error": "invalid_grant"})


async def test_sign_in_returns_only_to_the_exchange_pages(served: Served) -> None:
    async with browser() as http:
        async with http.get(f"{served.url}/signin?next=https://evil.example/", allow_redirects=False) as response:
            assert response.status == 400
            assert (await response.json())["issue"][0]["expression"] == ["next"]
        async with http.post(f"{served.url}/signin/session") as anonymous:
            assert anonymous.status == 401
            assert (await anonymous.json())["resourceType"] == "OperationOutcome"


def test_cis2_claims_map_through_the_selected_role() -> None:
    from services.signin.identity import SignInRefused, person_from_claims
    from services.signin.settings import SignInSettings

    cis2 = SignInSettings(
        roles_claim="nhsid_nrbac_roles",
        selected_role_claim="selected_roleid",
        org_claim="org_code",
        role_claim="role_code",
        purpose_claim="purpose",
        role_map={"R8000": "clinician", "R8010": "mdt-coordinator"},
    )
    claims = {
        "sub": "910000000001",
        "name": "Dr A. Smith",
        "selected_roleid": "555021935107",
        "nhsid_nrbac_roles": [
            {"person_roleid": "555021935106", "org_code": "RRV", "role_code": "S8000:G8000:R8000"},
            {"person_roleid": "555021935107", "org_code": "RJ1", "role_code": "S8000:G8000:R8010"},
        ],
    }
    person = person_from_claims(claims, cis2)
    assert (person.subject, person.name, person.org, person.role) == (
        "910000000001",
        "Dr A. Smith",
        "RJ1",
        "mdt-coordinator",
    )
    with pytest.raises(SignInRefused, match="choose one role"):
        person_from_claims({**claims, "selected_roleid": "nope"}, cis2)


def test_nhs_login_claims_make_a_patient() -> None:
    from services.signin.identity import person_from_claims
    from services.signin.settings import SignInSettings

    nhs_login = SignInSettings(
        default_org="NHSLOGIN", default_role="patient", patient_claim="nhs_number", name_claim="given_name family_name"
    )
    person = person_from_claims(
        {"sub": "b5a9c3", "nhs_number": "9000000009", "given_name": "Sam", "family_name": "Brown"}, nhs_login
    )
    assert (person.name, person.org, person.role, person.patient) == ("Sam Brown", "NHSLOGIN", "patient", "9000000009")
