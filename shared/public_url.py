"""Absolute URLs for what a client follows (FHIR fullUrl, paging links, attachment.url, Location).

The base is the configured ``LHCIE_PUBLIC_BASE_URL``; without it, the request's own scheme and host.
``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are believed only from a configured trusted proxy: from
anyone else they would let a client make the exchange hand out links to a host of its choosing.
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from shared.app_keys import RUNTIME

_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


def _trusted(request: web.Request, proxies: list[str]) -> bool:
    if not proxies or not request.remote:
        return False
    try:
        address = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(p, strict=False) for p in proxies)


def base_url(request: web.Request) -> str:
    """Scheme, host and path prefix of the exchange as its clients reach it (no trailing slash)."""
    settings = request.app[RUNTIME].settings
    if settings.public_base_url:
        return settings.public_base_url
    scheme, host = request.scheme, request.host
    if _trusted(request, settings.trusted_proxies):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if proto in ("http", "https"):
            scheme = proto
        if forwarded_host and _HOST.match(forwarded_host):
            host = forwarded_host
    return f"{scheme}://{host}"


def absolute(request: web.Request, path: str) -> str:
    """``path`` (starting with ``/``) under the public base URL."""
    return base_url(request) + path
