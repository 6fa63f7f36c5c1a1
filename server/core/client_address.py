"""Which address a request came from when it may have passed through proxies: X-Forwarded-For, trusted only as far
as the proxies it names are ours."""

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (`10.0.0.0/8, 127.0.0.1`); a bare address is a network of one. Raises ValueError."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then X-Forwarded-For is read from the
    right (each proxy appends the address it saw) past every trusted proxy, and the first other address is the
    client. Anything left of it was written by the client and may be forged, so it is never used. A malformed hop
    stops the walk at the last address known good."""
    client = _address(peer)
    if client is None:
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    while hops and any(client in network for network in trusted):
        previous = _address(hops.pop())
        if previous is None:
            break
        client = previous
    return str(client)
