"""The Data Controller Console (``/dcc/``) and the patient and carer page (``/patient/``): static files in
``console/``, served as notification's console is, with the same Content-Security-Policy.

The pages hold no data and need no token to load (public paths). Their script signs the person in through
``/signin`` (OpenID Connect; ``shared/web/session.js``, served at ``static/session.js``), then calls the
FHIR API with a short-lived exchange token that it renews before it expires; everything shown comes from the
API under that person's rights.
``vocabulary.json`` gives the words the pages show for the codes the API returns (purposes, document
categories, organisation types), from the same tables the API checks against.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.agreements.vocabulary import ORGANISATION_KIND_LABELS, ORGANISATION_KINDS, PURPOSE_LABELS, category_label
from shared.policy import CATEGORIES
from shared.web import add_session_script

CONSOLE_DIR = Path(__file__).with_name("console")
PATHS = ("/dcc/", "/patient/")
STATIC_PREFIXES = ("/dcc/static", "/patient/static")
# The coordinator console's policy (services/notification/routes.py): the pages' own script and style
# only ('self'), documents the page fetched itself (blob:) shown in place, never framed by another site.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' blob:; frame-src blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def vocabulary() -> dict[str, dict[str, str]]:
    return {
        "purposes": dict(PURPOSE_LABELS),
        "categories": {c: category_label(c) for c in CATEGORIES},
        "organisationKinds": {k: ORGANISATION_KIND_LABELS.get(k, k) for k in ORGANISATION_KINDS},
    }


def _page(name: str) -> object:
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CONSOLE_DIR / name, headers=HEADERS)

    return page


async def words(request: web.Request) -> web.Response:
    return web.json_response(vocabulary(), headers={"Cache-Control": "max-age=300"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dcc/", _page("dcc.html"))  # type: ignore[arg-type]
    app.router.add_get("/patient/", _page("patient.html"))  # type: ignore[arg-type]
    for prefix in STATIC_PREFIXES:
        app.router.add_get(f"{prefix}/vocabulary.json", words)
        add_session_script(app, prefix)
        app.router.add_static(prefix, CONSOLE_DIR / "static")
