"""The HTTP client rest-hooks are sent with (delivery.py's ``WebhookClient``): it connects only to
addresses the endpoint policy has just checked (``endpoints.py``), whatever the name resolved to when the
Subscription was created.

aiohttp resolves a name through the connector's resolver and connects to exactly the addresses it
returns, so the resolver is where each address is checked (DNS rebinding is caught here). A host written
as an address never reaches the resolver: ``check_literal`` checks it before the request. And so that no
path can hand the socket layer a name to resolve on its own, every socket is refused unless its
destination is already a numeric address.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.helpers import is_ip_address
from yarl import URL

from services.notification.endpoints import (
    EndpointPolicy,
    EndpointRefused,
    Resolve,
    endpoint_parts,
    literal_address,
)

log = logging.getLogger(__name__)


class RefusedAddress(OSError):
    """An OSError so that aiohttp reports it as a connection failure (retried like any other)."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"endpoint refused ({rule})")
        self.rule = rule


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: EndpointPolicy, resolve: Resolve) -> None:
        self._policy = policy
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = self._policy.refuse_addresses(host, await self._resolve(host, port))
        except EndpointRefused as refused:
            raise RefusedAddress(refused.rule) from None
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def numeric_only_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, sockaddr = addr_info
    if literal_address(str(sockaddr[0])) is None:
        # A name here would be resolved by the event loop itself, past every check above.
        raise RefusedAddress("unchecked-name")
    return socket.socket(family=family, type=type_, proto=proto)


def check_literal(policy: EndpointPolicy, endpoint: str) -> URL:
    """The URL as aiohttp will read it; RefusedAddress if its form is refused or its host is an address
    that may not be called (stored Subscriptions from before these checks are refused here too)."""
    try:
        endpoint_parts(endpoint)
        url = URL(endpoint)
        host = url.raw_host or ""
        if is_ip_address(host):  # aiohttp's own test for "connect without resolving"
            if literal_address(host) is None:
                raise EndpointRefused("obfuscated-address")
            policy.refuse_addresses(host, [str(literal_address(host))])
    except EndpointRefused as refused:
        raise RefusedAddress(refused.rule) from None
    except ValueError:
        raise RefusedAddress("not-a-url") from None
    return url


def open_session(policy: EndpointPolicy, resolve: Resolve, *, timeout_seconds: float) -> aiohttp.ClientSession:
    # No connector limits: the deliverer's per-host slots are taken outside the attempt's timeout, so
    # waiting for a slot never counts against an attempt.
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolve), socket_factory=numeric_only_socket, limit=0, limit_per_host=0
    )
    # total bounds the whole attempt: name resolution, connection, and the wait for the answer.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def refusal(exc: BaseException) -> str | None:
    """The rule that refused the connection, if that is what this client error was."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, RefusedAddress):
            return current.rule
        todo += [current.__cause__, current.__context__, getattr(current, "os_error", None)]
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += list(getattr(current, "exceptions", ()))
    return None


class HttpWebhookClient:
    def __init__(self, policy: EndpointPolicy, resolve: Resolve, timeout_seconds: float) -> None:
        self._policy = policy
        self._session = open_session(policy, resolve, timeout_seconds=timeout_seconds)

    async def post(self, endpoint: str, body: bytes, headers: Mapping[str, str]) -> tuple[bool, str]:
        try:
            url = check_literal(self._policy, endpoint)
            async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return True, ""
                return False, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            rule = refusal(exc)
            if rule is None:
                return False, type(exc).__name__
            log.warning("webhook.endpoint_refused rule=%s", rule, extra={"code": "NOT051"})
            return False, f"endpoint refused ({rule})"

    async def close(self) -> None:
        await self._session.close()
