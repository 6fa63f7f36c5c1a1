"""The network adapters by network, and an event's rendering for the network a postback goes to."""

from types import ModuleType

from server.core import reddit, tiktok
from server.core.postback import PostbackEvent
from server.core.types import Network

ADAPTERS: dict[Network, ModuleType] = {Network.TIKTOK: tiktok, Network.REDDIT: reddit}


def render_sendable(network: Network, event: PostbackEvent) -> bytes | None:
    """The event as the network's request carries it, or None when the network refuses it whatever happens (a
    Reddit conversion without a click id or a hashed email)."""
    if network is Network.REDDIT and not reddit.has_match_key(event):
        return None
    return ADAPTERS[network].render_event(event)  # type: ignore[no-any-return]
