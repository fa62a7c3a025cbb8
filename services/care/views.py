"""The people's views: a printable, read-only clinical view of a plan (the crew's questions first) and
the bed managers' live list of pending transfers.

The HTML shells carry no data and need no token (they are public paths, like the DCC console); their
script takes the user's bearer token from the ``#token=`` fragment (never sent to a server) and calls
the FHIR API, so what a person sees is what their own token may read, audited like any read.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from string import Template

from aiohttp import web

HERE = Path(__file__).parent / "views"
PATHS = ("/care/plan/", "/care/transfers/")
REFRESH_SECONDS = 15


def page(name: str, nonce: str) -> str:
    common = (HERE / "common.js").read_text()
    return Template((HERE / name).read_text()).safe_substitute(nonce=nonce, common=common, refresh=REFRESH_SECONDS)


def _serve(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        return web.Response(
            text=page(name, nonce),
            content_type="text/html",
            headers={
                "Content-Security-Policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                    "form-action 'none'"
                ),
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/care/plan/", _serve("plan.html"))
    app.router.add_get("/care/transfers/", _serve("transfers.html"))
