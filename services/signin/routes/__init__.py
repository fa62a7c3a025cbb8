"""The sign-in HTTP side: its application keys and ``install``, which mounts sign-in and, when no provider
is configured, the development provider."""

from __future__ import annotations

from aiohttp import web

from services.signin.client import OidcClient
from services.signin.devprovider import DevProvider
from services.signin.sessions import SignIns
from services.signin.settings import SignInSettings

SETTINGS = web.AppKey("signin_settings", SignInSettings)
SIGNINS = web.AppKey("signin_sessions", SignIns)
CLIENTS = web.AppKey("signin_clients", dict[str, OidcClient])
DEV = web.AppKey("signin_dev_provider", DevProvider)


def install(app: web.Application, settings: SignInSettings | None = None) -> None:
    from services.signin.routes import dev, signin

    app[SETTINGS] = settings or SignInSettings()
    app[SETTINGS].client_key()  # a private key that cannot be read stops start-up, naming its setting
    app[SIGNINS] = SignIns()
    app[CLIENTS] = {}
    signin.add_routes(app)
    if app[SETTINGS].issuer is None:
        app[DEV] = DevProvider(app[SETTINGS].client_id)
        dev.add_routes(app)
