"""The aiohttp application and request keys (web.AppKey) shared by every service app: not cryptographic keys."""

from __future__ import annotations

from aiohttp import web

from shared.auth import Caller
from shared.service import Runtime

RUNTIME = web.AppKey("runtime", Runtime)
REQUEST_ID = web.RequestKey("request_id", str)
CALLER = web.RequestKey("caller", Caller)
