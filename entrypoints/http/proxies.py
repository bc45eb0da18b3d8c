"""The client's address, behind the reverse proxies ``server.trusted_proxies`` names.

Behind a proxy every connection comes from the proxy; only the proxy knows the client,
and says so in ``X-Forwarded-For`` or ``Forwarded`` (RFC 7239). Anyone can send those
headers, so they are believed only when the connection comes from a trusted proxy, and
then only as far as trusted proxies wrote them: the chain is walked from the right (the
hop nearest to us) past every trusted address, and the first address that is not trusted
is the client. An entry that cannot be read (``unknown``, an obfuscated ``_identifier``,
anything that is not an address) ends the walk at the last trusted hop: a value that
cannot be parsed is never trusted, and what is beyond it is unknown. So does a request
whose two headers tell different stories (a proxy that sets one passes on whatever the
client put in the other).

With no trusted proxies (the default) the headers are ignored and the client is the peer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import this module: keep it light
    from aiohttp import web

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses and CIDR networks, IPv4 or IPv6; a ``ValueError`` naming the first bad one.
    Strict, so that a typo is never a wider (or narrower) network than was meant."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError:
            try:
                loose = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or a network such as 10.0.0.0/8") from None
            raise ValueError(f"{entry!r} has host bits set; did you mean {loose}?") from None
    return tuple(networks)


class TrustedProxies:
    """Which peers' forwarding headers are believed, and the client address they give."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = parse_networks(entries)
        self._trusted: dict[str, bool] = {}  # peer address as aiohttp gives it -> trusted?

    def __bool__(self) -> bool:
        return bool(self._networks)

    def client_address(self, request: web.BaseRequest) -> str | None:
        """The client's address: the peer's, unless the peer is a trusted proxy."""
        peer = request.remote
        if peer is None or not self._trusts_peer(peer):
            return peer
        answers = set()
        if "X-Forwarded-For" in request.headers:
            hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For") for hop in value.split(",")]
            answers.add(self._walk(peer, [_forwarded_for_address(hop) for hop in hops]))
        if "Forwarded" in request.headers:
            answers.add(self._walk(peer, [_forwarded_node(element) for element in request.forwarded]))
        if len(answers) != 1:
            return peer  # no header, or two that disagree
        return answers.pop()

    def _walk(self, peer: str, hops: Sequence[Address | None]) -> str:
        """From the right: past every trusted hop, to the first untrusted address; at an
        unreadable hop (``None``), the trusted hop before it."""
        last = peer
        for hop in reversed(hops):
            if hop is None:
                return last
            last = str(hop)
            if not self._trusts(hop):
                return last
        return last  # every hop is trusted: the leftmost is as far as anyone can tell

    def _trusts_peer(self, peer: str) -> bool:
        trusted = self._trusted.get(peer)
        if trusted is None:
            address = _parse(peer)
            trusted = address is not None and self._trusts(_unmapped(address))
            if len(self._trusted) >= 4096:  # peers are proxies, few; never let odd ones grow it
                self._trusted.clear()
            self._trusted[peer] = trusted
        return trusted

    def _trusts(self, address: Address) -> bool:
        return any(address in network for network in self._networks)


def _forwarded_for_address(hop: str) -> Address | None:
    """An X-Forwarded-For entry: an IPv4 or IPv6 address, bare or as some proxies write it,
    with a port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``)."""
    split = _host_and_port(hop, obfuscated_ports=False)
    if split is None:
        return None
    host, bracketed = split
    address = _parse(host)
    if address is None or (bracketed and address.version != 6):
        return None
    return _unmapped(address)


def _forwarded_node(element: Mapping[str, str]) -> Address | None:
    """The ``for`` node of a Forwarded element (RFC 7239 section 6): an IPv4 address, or an
    IPv6 address in brackets, each with an optional port (digits or an obfuscated
    ``_identifier``). ``unknown``, an obfuscated node and anything else are unreadable."""
    split = _host_and_port(element.get("for", ""), obfuscated_ports=True)
    if split is None:
        return None
    host, bracketed = split
    address = _parse(host)
    if address is None or address.version != (6 if bracketed else 4):
        return None
    return _unmapped(address)


def _host_and_port(node: str, *, obfuscated_ports: bool) -> tuple[str, bool] | None:
    """``[host]:port``, ``[host]``, ``host:port`` (one colon: IPv6 has more) or ``host``, as
    (host, bracketed); None if what follows the host is not a port."""
    if node.startswith("["):
        host, bracket, rest = node[1:].partition("]")
        if not bracket or (rest and not _is_port(rest, obfuscated_ports)):
            return None
        return host, True
    if node.count(":") == 1:
        host, _, port = node.partition(":")
        return (host, False) if _is_port(":" + port, obfuscated_ports) else None
    return node, False


def _is_port(text: str, obfuscated: bool) -> bool:
    """``:4711``, or with ``obfuscated``, ``:_hidden`` (RFC 7239 section 6.3)."""
    port = text[1:] if text.startswith(":") else ""
    if obfuscated and port.startswith("_"):
        return _OBFUSCATED.fullmatch(port) is not None
    return port.isascii() and port.isdigit() and len(port) <= 5


_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    """An IPv4 client as a dual-stack socket sees it (``::ffff:192.0.2.1``) is that IPv4 client."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
