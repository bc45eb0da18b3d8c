"""The client's address, behind the reverse proxies ``server.trusted_proxies`` names.

Behind a proxy every connection comes from the proxy; only the proxy knows the client,
and says so in the one header it writes: ``X-Forwarded-For`` or ``Forwarded`` (RFC 7239),
as ``server.proxy_header`` says. Only that header is read: a proxy passes on whatever else
the client sent, so a client that adds the other one (or makes the two disagree) must not
change what the proxy said. Anyone can send the header too, so it is believed only when
the connection comes from a trusted proxy, and then only as far as trusted proxies wrote
it: the chain is walked from the right (the hop nearest to us) past every trusted address,
and the first address that is not trusted is the client. An entry that cannot be read
(``unknown``, an obfuscated ``_identifier``, anything that is not an address) ends the walk
at the last trusted hop: a value that cannot be parsed is never trusted, and what is beyond
it is unknown.

The walk reads the header lazily from the right and stops at the first untrusted hop, or
after ``MAX_HOPS`` hops, each at most ``MAX_HOP_LENGTH`` characters: what the client put
to the left of its own address costs nothing, however long.

With no trusted proxies (the default) the header is ignored and the client is the peer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import this module: keep it light
    from aiohttp import web

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The headers a proxy may name the client in (``server.proxy_header``), by setting.
PROXY_HEADERS = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}
#: Hops examined, at most, from the right: more proxies than any real chain has. Beyond
#: them, the client counts as the last hop examined (a trusted proxy), as when every hop is.
MAX_HOPS = 16
#: Characters of one hop read, at most: an address with its port, or a Forwarded element
#: (``for="[2001:db8:cafe::17]:4711";proto=https;by=...;host=...``), is shorter.
MAX_HOP_LENGTH = 256


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
    """Which peers' forwarding header is believed, and the client address it gives."""

    def __init__(self, entries: Iterable[str], header: str = "x-forwarded-for") -> None:
        self._networks = parse_networks(entries)
        self._header = PROXY_HEADERS[header]
        self._read = _forwarded_for_address if header == "x-forwarded-for" else _forwarded_node
        self._trusted: dict[str, bool] = {}  # peer address as aiohttp gives it -> trusted?

    def __bool__(self) -> bool:
        return bool(self._networks)

    def client_address(self, request: web.BaseRequest) -> str | None:
        """The client's address: the peer's, unless the peer is a trusted proxy."""
        peer = request.remote
        if peer is None or not self._trusts_peer(peer):
            return peer
        values = request.headers.getall(self._header, ())
        if not values:
            return peer
        return self._walk(peer, (None if hop is None else self._read(hop) for hop in _from_the_right(values)))

    def _walk(self, peer: str, hops: Iterable[Address | None]) -> str:
        """From the right: past every trusted hop, to the first untrusted address; at an
        unreadable hop (``None``), the trusted hop before it."""
        last = peer
        for examined, hop in enumerate(hops):
            if hop is None or examined == MAX_HOPS:
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


def _from_the_right(values: Sequence[str]) -> Iterator[str | None]:
    """The comma-separated hops of a header's lines, the last one first, each read only
    when asked for; None for one longer than MAX_HOP_LENGTH (nothing is read past it).
    Splitting on every comma is right even for Forwarded, whose quoted strings may hold
    one: a proxy's own element never does, and a client's, split wrongly, cannot be read
    and ends the walk, while a quote a client leaves open cannot swallow the element a
    proxy appended after it."""
    for value in reversed(values):
        end = len(value)
        while True:
            start = max(0, end - MAX_HOP_LENGTH - 1)
            comma = value.rfind(",", start, end)
            if comma < 0 and start > 0:
                yield None  # longer than any hop
                return
            yield value[comma + 1 : end]
            if comma < 0:
                break
            end = comma


def _forwarded_for_address(hop: str) -> Address | None:
    """An X-Forwarded-For entry: an IPv4 or IPv6 address, bare or as some proxies write it,
    with a port (``192.0.2.1:4711``, ``[2001:db8::1]:4711``)."""
    split = _host_and_port(hop.strip(), obfuscated_ports=False)
    if split is None:
        return None
    host, bracketed = split
    address = _parse(host)
    if address is None or (bracketed and address.version != 6):
        return None
    return _unmapped(address)


def _forwarded_node(element: str) -> Address | None:
    """The ``for`` node of a Forwarded element (RFC 7239 section 6): an IPv4 address, or an
    IPv6 address in brackets, each with an optional port (digits or an obfuscated
    ``_identifier``). ``unknown``, an obfuscated node and anything else are unreadable."""
    node = _for_parameter(element)
    if node is None:
        return None
    split = _host_and_port(node, obfuscated_ports=True)
    if split is None:
        return None
    host, bracketed = split
    address = _parse(host)
    if address is None or address.version != (6 if bracketed else 4):
        return None
    return _unmapped(address)


def _for_parameter(element: str) -> str | None:
    """The value of the one ``for`` parameter of an element (``by=...;for="...";proto=...``),
    unquoted; None if the element has none, two, or is not a list of name=value pairs."""
    found = None
    for pair in element.split(";"):
        pair = pair.strip()
        if not pair:
            continue
        name, equals, value = pair.partition("=")
        if not equals or not _NAME.fullmatch(name.strip()):
            return None
        value = value.strip()
        if value.startswith('"'):
            quoted = _QUOTED.fullmatch(value)
            if quoted is None:
                return None
            value = _ESCAPE.sub(r"\1", quoted.group(1))
        elif not _BARE.fullmatch(value):
            return None
        if name.strip().lower() == "for":
            if found is not None:
                return None  # a parameter may occur once in an element (RFC 7239 section 4)
            found = value
    return found


_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")
_BARE = re.compile(r'[^\s";,]+')


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
