"""HTTP for sign-in: start, the provider's callback, the page's session token, sign-out.

The browser never sees the provider's tokens: it holds an HttpOnly cookie scoped to /signin and asks
``POST /signin/session`` for a short-lived exchange token, again before that one expires.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from services.signin.client import OidcClient, ProviderUnavailable
from services.signin.identity import SignInRefused, person_from_claims
from services.signin.routes import CLIENTS, SETTINGS, SIGNINS
from shared.app_keys import RUNTIME
from shared.fhir.errors import Code, FhirError

log = logging.getLogger(__name__)

SESSION_COOKIE = "lhcie_session"
STATE_COOKIE = "lhcie_signin_state"
# Pages a sign-in may return to: nothing else, so /signin cannot be used as an open redirect.
PAGES = ("/console/", "/dcc/", "/patient/")
# Renew the provider's tokens when they have less than this left.
RENEW_MARGIN = 120


def redirect(location: str) -> web.Response:
    # Returned, not raised: the edge middleware passes a returned response through untouched.
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _base(request: web.Request) -> str:
    configured = request.app[SETTINGS].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def _client(request: web.Request) -> OidcClient:
    settings = request.app[SETTINGS]
    issuer = settings.issuer or f"{_base(request)}/dev-oidc"
    clients = request.app[CLIENTS]
    if issuer not in clients:
        clients[issuer] = OidcClient(
            issuer=issuer,
            client_id=settings.client_id,
            client_secret=settings.client_secret(),
            scopes=settings.scopes,
            client_key=settings.client_key(),
        )
    return clients[issuer]


def _cookie(response: web.StreamResponse, name: str, value: str, *, max_age: int, secure: bool) -> None:
    # Lax, not Strict: the provider's redirect back to the callback is a cross-site top-level navigation.
    response.set_cookie(name, value, max_age=max_age, path="/signin", httponly=True, samesite="Lax", secure=secure)


async def begin(request: web.Request) -> web.Response:
    next_path = request.query.get("next", "/console/")
    if next_path not in PAGES:
        raise FhirError.of(Code.INVALID_PARAMETER, f"next must be one of {', '.join(PAGES)}", "next")
    try:
        url, pending = await _client(request).begin(
            redirect_uri=f"{_base(request)}/signin/callback", next_path=next_path
        )
    except ProviderUnavailable as exc:
        raise FhirError.of(Code.UNAVAILABLE, str(exc), headers={"Retry-After": "5"}) from None
    if not request.app[SIGNINS].hold(pending):
        raise FhirError.of(Code.RATE_LIMITED, "Too many sign-ins in progress; try again shortly.")
    response = redirect(url)
    _cookie(response, STATE_COOKIE, pending.state, max_age=600, secure=request.secure)
    return response


async def callback(request: web.Request) -> web.Response:
    state = request.query.get("state", "")
    pending = request.app[SIGNINS].take(state) if state else None
    # The state must also be the one this browser started with, or a sign-in could be planted on it.
    if pending is None or request.cookies.get(STATE_COOKIE) != state:
        raise FhirError.of(
            Code.MALFORMED_REQUEST, "This sign-in has expired or was not started here; sign in again.", "state"
        )
    back = pending.next_path
    if "error" in request.query or "code" not in request.query:
        return _back_with_error(back, "The sign-in was cancelled or refused by the provider.")
    settings = request.app[SETTINGS]
    try:
        tokens, claims = await _client(request).finish(pending, code=request.query["code"])
        person = person_from_claims(claims, settings)
    except (SignInRefused, ProviderUnavailable) as exc:
        log.info("signin.refused reason=%s", type(exc).__name__, extra={"code": "SGN001"})
        return _back_with_error(back, str(exc))
    sid = request.app[SIGNINS].open(person, tokens, hours=settings.session_hours)
    log.info("signin.opened role=%s org=%s", person.role, person.org, extra={"code": "SGN002"})
    response = redirect(back)
    _cookie(response, SESSION_COOKIE, sid, max_age=settings.session_hours * 3600, secure=request.secure)
    response.del_cookie(STATE_COOKIE, path="/signin")
    return response


def _back_with_error(page: str, message: str) -> web.Response:
    response = redirect(f"{page}#signin-error={quote(message)}")
    response.del_cookie(STATE_COOKIE, path="/signin")
    return response


async def session(request: web.Request) -> web.Response:
    """A fresh exchange token for the signed-in person, renewing the provider's tokens when due."""
    sid = request.cookies.get(SESSION_COOKIE)
    signins = request.app[SIGNINS]
    current = signins.get(sid)
    if current is None:
        raise FhirError.of(Code.UNAUTHORIZED, "You are not signed in, or your sign-in has ended: sign in again.")
    expires = current.provider_expires_at()
    if expires is not None and expires - time.time() < RENEW_MARGIN:
        refresh = current.tokens.get("refresh_token")
        try:
            if not refresh:
                raise SignInRefused("the provider gave no refresh token")
            renewed = await _client(request).refresh(refresh)
        except (SignInRefused, ProviderUnavailable) as exc:
            signins.close(sid)
            log.info("signin.renewal_failed reason=%s", type(exc).__name__, extra={"code": "SGN003"})
            raise FhirError.of(Code.UNAUTHORIZED, "Your sign-in could not be renewed: sign in again.") from None
        current.tokens = {**current.tokens, **renewed}
    issuer = request.app[RUNTIME].issuer
    if issuer is None:
        raise FhirError.of(Code.UNAVAILABLE, "This deployment has no token signing key for signed-in sessions.")
    settings = request.app[SETTINGS]
    person = current.person
    ttl = settings.token_ttl_seconds
    token = issuer.mint(
        org=person.org,
        role=person.role,
        mdt=person.mdt,
        patient=person.patient,
        subject=person.subject,
        name=person.name,
        ttl=ttl,
    )
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "name": person.name,
        "org": person.org,
        "role": person.role,
        "purpose": person.purpose,
        "session_ends_at": int(current.ends_at),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def signout(request: web.Request) -> web.Response:
    request.app[SIGNINS].close(request.cookies.get(SESSION_COOKIE))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/signin")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/signin", begin)
    app.router.add_get("/signin/callback", callback)
    app.router.add_post("/signin/session", session)
    app.router.add_post("/signin/signout", signout)
