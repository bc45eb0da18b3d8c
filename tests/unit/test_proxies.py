"""The client's address behind trusted proxies: X-Forwarded-For or Forwarded (RFC 7239),
whichever the proxies write (and only it), walked from the right, believed only as far as
trusted proxies wrote it."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from entrypoints.http import proxies
from entrypoints.http.proxies import MAX_HOP_LENGTH, MAX_HOPS, TrustedProxies, parse_networks

PROXY = "127.0.0.1"


def client(trusted: list[str], peer: str, *headers: tuple[str, str], reads: str | None = None) -> str | None:
    """The client address a request from ``peer`` with ``headers`` has, behind ``trusted``
    proxies that write the header ``reads`` (by default, the one header given)."""
    reads = reads or (headers[0][0].lower() if headers else "x-forwarded-for")
    request = make_mocked_request("GET", "/", headers=CIMultiDict(headers)).clone(remote=peer)
    return TrustedProxies(trusted, reads).client_address(request)


def test_without_trusted_proxies_the_headers_are_ignored() -> None:
    assert client([], PROXY, ("X-Forwarded-For", "203.0.113.7")) == PROXY
    assert client([], PROXY, ("Forwarded", "for=203.0.113.7")) == PROXY
    assert not TrustedProxies([])


def test_a_trusted_proxy_names_the_client() -> None:
    assert client([PROXY], PROXY, ("X-Forwarded-For", "203.0.113.7")) == "203.0.113.7"
    assert client([PROXY], PROXY, ("Forwarded", "for=203.0.113.7;proto=https;by=127.0.0.1")) == "203.0.113.7"


def test_an_untrusted_peer_is_the_client_whatever_it_says() -> None:
    assert client([PROXY], "198.51.100.9", ("X-Forwarded-For", "203.0.113.7")) == "198.51.100.9"
    assert client(["10.0.0.0/8"], PROXY, ("Forwarded", "for=203.0.113.7")) == PROXY


def test_a_trusted_proxy_without_a_header_is_the_client() -> None:
    assert client([PROXY], PROXY) == PROXY


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # What the client wrote itself (left of its own address) is never reached.
        ([("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.2, 10.0.0.3")], "203.0.113.7"),
        ([("X-Forwarded-For", "6.6.6.6, 203.0.113.7"), ("X-Forwarded-For", "10.0.0.2")], "203.0.113.7"),
        ([("Forwarded", "for=6.6.6.6, for=203.0.113.7;proto=https, for=10.0.0.2")], "203.0.113.7"),
        ([("Forwarded", "for=6.6.6.6"), ("Forwarded", "for=203.0.113.7, for=10.0.0.2")], "203.0.113.7"),
        # Every hop trusted: the leftmost is as far as anyone can tell.
        ([("X-Forwarded-For", "10.0.0.9, 10.0.0.2")], "10.0.0.9"),
    ],
)
def test_a_chain_of_proxies_is_walked_from_the_right(headers: list[tuple[str, str]], expected: str) -> None:
    assert client([PROXY, "10.0.0.0/8"], PROXY, *headers) == expected


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("Forwarded", 'for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("Forwarded", 'for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ("Forwarded", 'For="[2001:DB8:CAFE:0::17]:_hidden-port"', "2001:db8:cafe::17"),
        ("Forwarded", 'for="192.0.2.43:47011"', "192.0.2.43"),
        ("Forwarded", "for=192.0.2.43:4711", "192.0.2.43"),
        ("Forwarded", 'by=127.0.0.1; for="192.0.2.43"', "192.0.2.43"),
        ("X-Forwarded-For", "2001:db8::7", "2001:db8::7"),
        ("X-Forwarded-For", "[2001:db8::7]:4711", "2001:db8::7"),
        ("X-Forwarded-For", " 192.0.2.43:4711 ", "192.0.2.43"),
        ("X-Forwarded-For", "::ffff:192.0.2.43", "192.0.2.43"),
    ],
)
def test_addresses_with_ports_brackets_and_quotes(header: str, value: str, expected: str) -> None:
    assert client([PROXY], PROXY, (header, value)) == expected


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Forwarded", "for=unknown"),
        ("Forwarded", "for=_hidden"),
        ("Forwarded", 'for="_hidden:4711"'),
        ("Forwarded", "for=2001:db8::1"),  # IPv6 must be quoted and bracketed
        ("Forwarded", 'for="2001:db8::1"'),
        ("Forwarded", 'for="[192.0.2.43]"'),
        ("Forwarded", 'for="[2001:db8::1]:http"'),
        ("Forwarded", 'for="[2001:db8::1"'),
        ("Forwarded", "proto=https;by=127.0.0.1"),  # no for=
        ("Forwarded", "for=192.0.2.300"),
        ("Forwarded", "garbage"),
        ("X-Forwarded-For", "unknown"),
        ("X-Forwarded-For", "not-an-address"),
        ("X-Forwarded-For", ""),
        ("X-Forwarded-For", "192.0.2.43:port"),
        ("X-Forwarded-For", "[192.0.2.43]"),
        ("X-Forwarded-For", "192.0.2.43 198.51.100.1"),
        ("X-Forwarded-For", "2001:db8::1%"),
    ],
)
def test_a_hop_that_cannot_be_read_ends_the_walk_at_the_trusted_peer(header: str, value: str) -> None:
    assert client([PROXY], PROXY, (header, value)) == PROXY


def test_a_hop_that_cannot_be_read_ends_the_walk_at_the_last_trusted_hop() -> None:
    trusted = [PROXY, "10.0.0.0/8"]
    assert client(trusted, PROXY, ("X-Forwarded-For", "203.0.113.7, unknown, 10.0.0.2")) == "10.0.0.2"
    assert client(trusted, PROXY, ("Forwarded", "for=203.0.113.7, for=_gateway, for=10.0.0.2")) == "10.0.0.2"
    # Beyond the first untrusted address nothing is read, readable or not.
    assert client(trusted, PROXY, ("X-Forwarded-For", "unknown, ,203.0.113.7, 10.0.0.2")) == "203.0.113.7"


def test_a_quote_a_client_left_open_cannot_swallow_what_the_proxy_appended() -> None:
    # The client sent `Forwarded: for="1.1.1.1` (or `for="`); the proxy appended its own
    # element, which is read from the right, whatever quote the client left open before it.
    # (Read from the left, the second one used to be swallowed, and the request count as
    # the proxy's: a client could choose to be the proxy.)
    assert client([PROXY], PROXY, ("Forwarded", 'for="1.1.1.1, for=198.51.100.9')) == "198.51.100.9"
    assert client([PROXY], PROXY, ("Forwarded", 'for=", for="[2001:db8::9]"')) == "2001:db8::9"
    # What is left of it, quote and all, cannot be read: the walk ends at the last trusted hop.
    assert client([PROXY, "10.0.0.0/8"], PROXY, ("Forwarded", 'for="1.1.1.1, for=10.0.0.2')) == "10.0.0.2"


def test_only_the_header_the_proxies_write_is_read() -> None:
    # A proxy that sets one of them passes on whatever the client put in the other: a
    # client adding its own must change nothing (it used to make the request the proxy's).
    both = [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=6.6.6.6")]
    assert client([PROXY], PROXY, *both, reads="x-forwarded-for") == "203.0.113.7"
    assert client([PROXY], PROXY, *both, reads="forwarded") == "6.6.6.6"
    assert client([PROXY], PROXY, ("Forwarded", "for=6.6.6.6"), reads="x-forwarded-for") == PROXY
    assert client([PROXY], PROXY, ("X-Forwarded-For", "6.6.6.6"), reads="forwarded") == PROXY


def test_the_walk_reads_hops_only_up_to_the_first_untrusted_one() -> None:
    """What is left of the client's own address is never read, however long (100 lines of
    60 KB of "1," cost 10 s of CPU when every hop was parsed)."""
    read: list[str] = []
    original = proxies._forwarded_for_address

    def counting(hop: str) -> object:
        read.append(hop)
        return original(hop)

    junk = ("X-Forwarded-For", "1," * 30_000)
    try:
        proxies._forwarded_for_address = counting  # type: ignore[assignment]
        assert client([PROXY, "10.0.0.0/8"], PROXY, junk, ("X-Forwarded-For", "203.0.113.7, 10.0.0.2")) == (
            "203.0.113.7"
        )
    finally:
        proxies._forwarded_for_address = original
    assert read == [" 10.0.0.2", "203.0.113.7"]


def test_at_most_max_hops_are_examined_and_none_longer_than_a_hop_can_be() -> None:
    trusted = [PROXY, "10.0.0.0/8"]
    chain = ", ".join(f"10.0.{n // 250}.{n % 250 + 1}" for n in range(MAX_HOPS + 5))
    # Every hop examined is trusted: the client counts as the last one examined.
    assert client(trusted, PROXY, ("X-Forwarded-For", "203.0.113.7, " + chain)) == "10.0.0.6"
    # A hop longer than any address ends the walk, unread.
    assert client(trusted, PROXY, ("X-Forwarded-For", "1" * (MAX_HOP_LENGTH + 1) + ", 10.0.0.2")) == "10.0.0.2"
    assert client(trusted, PROXY, ("X-Forwarded-For", " " * (MAX_HOP_LENGTH - 11) + "203.0.113.7")) == "203.0.113.7"
    long_element = "for=203.0.113.7;" + "x=y;" * 100
    assert client(trusted, PROXY, ("Forwarded", long_element + ", for=10.0.0.2")) == "10.0.0.2"


def test_ipv6_proxies_and_ipv4_peers_seen_through_a_dual_stack_socket() -> None:
    assert client(["fd00::/8"], "fd00::1", ("X-Forwarded-For", "2001:db8::7")) == "2001:db8::7"
    assert client(["fd00::/8"], "fe80::1", ("X-Forwarded-For", "2001:db8::7")) == "fe80::1"
    assert client([PROXY], "::ffff:127.0.0.1", ("X-Forwarded-For", "203.0.113.7")) == "203.0.113.7"
    assert client(["::1"], "::1", ("Forwarded", "for=192.0.2.43")) == "192.0.2.43"


@pytest.mark.parametrize(
    "element",
    [
        "for=192.0.2.43;for=198.51.100.9",  # a parameter occurs once in an element
        'for="192.0.2.43',  # a quote left open
        'for=192.0.2."43"',
        "for 192.0.2.43",
        "=192.0.2.43",
        "f(r=192.0.2.43",
    ],
)
def test_a_forwarded_element_that_is_not_one_cannot_be_read(element: str) -> None:
    assert client([PROXY], PROXY, ("Forwarded", element)) == PROXY


def test_a_forwarded_element_may_escape_inside_its_quotes_and_leave_out_empty_pairs() -> None:
    assert client([PROXY], PROXY, ("Forwarded", r'proto=https;; for="\192.0.2.43";')) == "192.0.2.43"


def test_the_header_to_read_is_one_of_two() -> None:
    with pytest.raises(KeyError):
        TrustedProxies([PROXY], "x-real-ip")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.300", "'10.0.0.300' is not an IP address or a network such as 10.0.0.0/8"),
        ("proxy.internal", "'proxy.internal' is not an IP address or a network such as 10.0.0.0/8"),
        ("fd00::1/8", "'fd00::1/8' has host bits set; did you mean fd00::/8?"),
        ("", "'' is not an IP address or a network such as 10.0.0.0/8"),
    ],
)
def test_a_bad_entry_is_named(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_networks(["127.0.0.1", entry])


def test_addresses_and_networks_of_both_families() -> None:
    assert [str(n) for n in parse_networks(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
        "fd00::/8",
    ]
