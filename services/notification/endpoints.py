"""Which rest-hook endpoints the exchange will call (SSRF): an http(s) URL without credentials whose host
resolves only to public internet addresses, unless the operator's allow-list admits the host or address.

A subscriber chooses the URL, so without this check any system token could make the exchange POST to its
own services (``$reconcile`` on loopback), to the cloud metadata service, or into a hospital's private
network. The check runs when a Subscription is created and again at every connection (``delivery.py``),
because a name that resolved to a public address at creation can resolve to ``127.0.0.1`` a minute later
(DNS rebinding). Numeric hosts in the forms only ``inet_aton`` reads (``0x7f000001``, ``2130706433``,
``0177.0.0.1``, ``127.1``) are refused outright: no receiver needs them, and every parser reads them
differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Named so that the log says which rule refused an address; anything else that is not globally routable
# (documentation, benchmarking and reserved ranges) is refused as "not public".
REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("cloud-metadata", _nets("169.254.169.254/32", "fd00:ec2::254/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("link-local", _nets("169.254.0.0/16", "fe80::/10")),
    ("private", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("cgnat", _nets("100.64.0.0/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("broadcast", _nets("255.255.255.255/32")),
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SCHEMES = ("http", "https")


class EndpointRefused(Exception):
    """The endpoint may not be called. ``rule`` names why, for logs; it never carries the address."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo): it reaches that IPv4 host."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_rule(address: IPAddress) -> str | None:
    """The rule that refuses this address, or None for a public one."""
    inner = _embedded_ipv4(address)
    for candidate in (address, inner):
        if candidate is None:
            continue
        for rule, networks in REFUSED:
            if any(candidate in net for net in networks if net.version == candidate.version):
                return rule
    # Fail closed: an IPv6 form of a public IPv4 address is refused too (no receiver publishes one).
    if not address.is_global or (inner is not None and not inner.is_global):
        return "not-public"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names if it is written as one (canonical form); None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_obfuscated_ipv4(host: str) -> bool:
    """A host the OS reads as an IPv4 address although it is not in dotted-decimal form."""
    if literal_address(host) is not None:
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the OS resolver gives for the host, as it would for a connection."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def endpoint_parts(url: object) -> tuple[str, int]:
    """The host and port of an acceptable URL; EndpointRefused for any other form."""
    if not isinstance(url, str) or len(url) > 2048:
        raise EndpointRefused("not-a-url")
    # Characters that URL parsers disagree on (a backslash is a path in one and an authority end in
    # another) or that no receiver's URL needs: refused rather than interpreted.
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise EndpointRefused("unsafe-characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused("not-a-url") from None
    if parts.scheme not in SCHEMES:
        raise EndpointRefused("scheme")
    if "@" in parts.netloc:
        raise EndpointRefused("userinfo")
    host = parts.hostname or ""
    if not host:
        raise EndpointRefused("no-host")
    if is_obfuscated_ipv4(host):
        raise EndpointRefused("obfuscated-address")
    if port == 0:
        raise EndpointRefused("port")
    return host, port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class EndpointPolicy:
    """The check itself; ``hosts`` and ``networks`` are the operator's allow-list."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EndpointPolicy:
        """Allow-list entries: host names (exact, case-insensitive), addresses, or CIDR ranges."""
        hosts, networks = set(), []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if is_obfuscated_ipv4(entry) or not all(c.isalnum() or c in "-." for c in entry):
                    raise ValueError(
                        f"webhook allow-list entry {raw!r} is neither a host name nor an address/CIDR"
                    ) from None
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def refuse_address(self, host: str, address: str) -> None:
        """EndpointRefused unless this resolved (or literal) address of the host may be called."""
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise EndpointRefused("unresolved") from None
        if self.host_allowed(host) or any(parsed in net for net in self.networks if net.version == parsed.version):
            return
        rule = address_rule(parsed)
        if rule is not None:
            raise EndpointRefused(rule)

    def refuse_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """All of them must pass: a name with one public and one private address is refused (fail closed)."""
        checked = list(addresses)
        if not checked:
            raise EndpointRefused("unresolved")
        for address in checked:
            self.refuse_address(host, address)
        return checked

    async def check(self, url: object, *, resolve: Resolve = system_resolve, timeout: float = 5.0) -> list[str]:
        """The whole check as at creation: form, then every address the host resolves to."""
        host, port = endpoint_parts(url)
        literal = literal_address(host)
        if literal is not None:
            return self.refuse_addresses(host, [str(literal)])
        try:
            addresses = await asyncio.wait_for(resolve(host, port), timeout)
        except (OSError, TimeoutError, UnicodeError):
            raise EndpointRefused("unresolved") from None
        return self.refuse_addresses(host, addresses)
