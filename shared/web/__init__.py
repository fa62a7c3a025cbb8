"""Scripts that more than one service's pages load (``session.js``: sign-in and the token's renewal).

Each page's script imports it from beside itself (``./session.js``), so a service serves it under each of
its own static prefixes: the edge and the ingress send a page's paths to the service that owns the page,
and one copy here means one place to mend how people stay signed in.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).parent
SESSION_SCRIPT = "session.js"


async def _session_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / SESSION_SCRIPT)


def add_session_script(app: web.Application, prefix: str) -> None:
    """Serve the shared sign-in script at ``{prefix}/session.js``: a route of its own (declared in the
    service's operations, public like the folder), which the router matches before the static folder at
    ``prefix``."""
    app.router.add_get(f"{prefix}/{SESSION_SCRIPT}", _session_script)
