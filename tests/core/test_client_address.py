"""The client's address behind proxies: X-Forwarded-For is believed only from trusted proxies, and only as far as
they go."""

import pytest

from server.core.client_address import client_address, parse_networks

PROXY = parse_networks("10.0.0.0/8, 192.168.1.1")


@pytest.mark.parametrize(("peer", "forwarded_for", "trusted", "client"), [
    # No trusted proxy: the peer, whatever the header says.
    ("203.0.113.7:5000", ["1.2.3.4"], (), "203.0.113.7"),
    ("203.0.113.7:5000", ["1.2.3.4"], PROXY, "203.0.113.7"),
    # From a trusted proxy: the address it saw.
    ("10.1.1.1:5000", ["1.2.3.4"], PROXY, "1.2.3.4"),
    ("10.1.1.1:5000", [], PROXY, "10.1.1.1"),
    # What the client wrote before the proxy's own hop is not believed.
    ("10.1.1.1:5000", ["6.6.6.6, 1.2.3.4"], PROXY, "1.2.3.4"),
    ("10.1.1.1:5000", ["6.6.6.6", "1.2.3.4"], PROXY, "1.2.3.4"),
    # A chain of trusted proxies is walked through.
    ("10.1.1.1:5000", ["6.6.6.6, 1.2.3.4, 192.168.1.1"], PROXY, "1.2.3.4"),
    ("10.1.1.1:5000", ["10.2.2.2, 10.3.3.3"], PROXY, "10.2.2.2"),
    # A malformed hop stops at the last good address.
    ("10.1.1.1:5000", ["1.2.3.4, garbage"], PROXY, "10.1.1.1"),
    # IPv6, bracketed or not, and IPv4 mapped into IPv6.
    ("[2001:db8::1]:443", ["1.2.3.4"], (), "2001:db8::1"),
    ("10.1.1.1:5000", ["2001:db8::7"], PROXY, "2001:db8::7"),
    ("::ffff:10.1.1.1", ["1.2.3.4"], PROXY, "1.2.3.4"),
    ("[::1]:5000", ["1.2.3.4"], parse_networks("::1"), "1.2.3.4"),
])
def test_client_address(peer: str, forwarded_for: list[str], trusted: tuple, client: str) -> None:
    assert client_address(peer, forwarded_for, trusted) == client


def test_bad_networks_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, not-a-network")
    assert parse_networks("") == ()
