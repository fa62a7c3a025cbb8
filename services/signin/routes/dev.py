"""The development OpenID provider's HTTP side, at /dev-oidc: discovery, keys, the sign-in page listing the
demo people, the token endpoint and userinfo. ID tokens are signed by the embedded issuer's key."""

from __future__ import annotations

import html
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from services.signin.devprovider import BY_SUB, PEOPLE, Grant
from services.signin.routes import DEV, SETTINGS
from shared.app_keys import RUNTIME
from shared.fhir.errors import Code, FhirError

PREFIX = "/dev-oidc"


def _issuer_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].public_url
    base = configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"
    return base + PREFIX


def _signer(request: web.Request) -> Any:
    issuer = request.app[RUNTIME].issuer
    if issuer is None:
        raise FhirError.of(Code.NOT_FOUND, "The development provider needs the embedded issuer.")
    return issuer


async def discovery(request: web.Request) -> web.Response:
    issuer = _issuer_url(request)
    return web.json_response(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": ["sub", "name", "org", "role", "purpose", "mdt", "patient"],
        }
    )


async def keys(request: web.Request) -> web.Response:
    return web.json_response(_signer(request).jwks())


def _check_authorize(request: web.Request, params: Any) -> None:
    expected_redirect = _issuer_url(request).removesuffix(PREFIX) + "/signin/callback"
    checks = [
        ("response_type", params.get("response_type") == "code"),
        ("client_id", params.get("client_id") == request.app[DEV].client_id),
        ("redirect_uri", params.get("redirect_uri") == expected_redirect),
        ("code_challenge_method", params.get("code_challenge_method") == "S256"),
        ("code_challenge", bool(params.get("code_challenge"))),
        ("state", bool(params.get("state"))),
    ]
    for name, ok in checks:
        if not ok:
            raise FhirError.of(Code.INVALID_PARAMETER, f"The sign-in request's {name} is missing or not allowed.", name)


PAGE = """<!doctype html>
<html lang="en-GB"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · LHCIE development provider</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
button{{display:block;width:100%;text-align:left;margin:.5rem 0;padding:.75rem;font:inherit;cursor:pointer}}
small{{display:block;color:#505a5f}}</style></head>
<body><h1>Sign in</h1>
<p>Development provider for the embedded exchange. In production this is NHS CIS2 (staff) or NHS login
(patients). Choose who you are:</p>
<form method="post" action="{action}">{hidden}
{buttons}
</form></body></html>"""
KEPT = (
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "scope",
)


async def authorize_page(request: web.Request) -> web.Response:
    _check_authorize(request, request.query)
    hidden = "".join(f'<input type="hidden" name="{k}" value="{html.escape(request.query.get(k, ""))}">' for k in KEPT)
    buttons = "\n".join(
        f'<button type="submit" name="person" value="{html.escape(p.sub)}">{html.escape(p.name)}'
        f"<small>{html.escape(p.job)} · {html.escape(p.org)} · {html.escape(p.role)}</small></button>"
        for p in PEOPLE
    )
    body = PAGE.format(action=f"{PREFIX}/authorize", hidden=hidden, buttons=buttons)
    return web.Response(
        text=body,
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
            "Cache-Control": "no-store",
        },
    )


async def authorize_choose(request: web.Request) -> web.Response:
    form = await request.post()
    _check_authorize(request, form)
    person = BY_SUB.get(str(form.get("person", "")))
    if person is None:
        raise FhirError.of(Code.INVALID_PARAMETER, "Choose one of the listed people.", "person")
    code = request.app[DEV].authorize(
        person,
        nonce=str(form.get("nonce") or "") or None,
        challenge=str(form["code_challenge"]),
        redirect_uri=str(form["redirect_uri"]),
    )
    query = urlencode({"code": code, "state": str(form["state"])})
    return web.Response(status=302, headers={"Location": f"{form['redirect_uri']!s}?{query}"})


def _token_error(error: str, status: int = 400) -> web.Response:
    # RFC 6749 5.2: the token endpoint answers OAuth errors, which clients such as Authlib read.
    return web.json_response({"error": error}, status=status, headers={"Cache-Control": "no-store"})


async def token(request: web.Request) -> web.Response:
    form = await request.post()
    dev = request.app[DEV]
    if form.get("client_id") != dev.client_id:
        return _token_error("invalid_client", 401)
    grant: Grant | None
    if form.get("grant_type") == "authorization_code":
        grant = dev.redeem(
            str(form.get("code", "")),
            redirect_uri=str(form.get("redirect_uri", "")),
            verifier=str(form.get("code_verifier", "")),
        )
    elif form.get("grant_type") == "refresh_token":
        grant = dev.renew(str(form.get("refresh_token", "")))
    else:
        return _token_error("unsupported_grant_type")
    if grant is None:
        return _token_error("invalid_grant")
    access, refresh, ttl = dev.issue(grant)
    now = int(time.time())
    claims = {"iss": _issuer_url(request), "aud": dev.client_id, "iat": now, "exp": now + ttl, **grant.person.claims()}
    if grant.nonce:
        claims["nonce"] = grant.nonce
    return web.json_response(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "id_token": _signer(request).sign(claims),
        },
        headers={"Cache-Control": "no-store"},
    )


async def userinfo(request: web.Request) -> web.Response:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    claims = request.app[DEV].userinfo(value) if scheme.lower() == "bearer" else None
    if claims is None:
        return web.json_response(
            {"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return web.json_response(claims)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/.well-known/openid-configuration", discovery)
    app.router.add_get(f"{PREFIX}/jwks", keys)
    app.router.add_get(f"{PREFIX}/authorize", authorize_page)
    app.router.add_post(f"{PREFIX}/authorize", authorize_choose)
    app.router.add_post(f"{PREFIX}/token", token)
    app.router.add_get(f"{PREFIX}/userinfo", userinfo)
