"""The tests' fake ad network, answering as always but remembering only dedup ids and when each first arrived."""

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from server.core import tiktok
from tests.fakes.fake_network import FakeAdNetwork, NetworkName, ReceivedRequest

TOKEN = "bench-tiktok-token-0123456789"
PIXEL = "CBENCHPIXEL01"


def _dedup_ids(network: NetworkName, payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return []
    events = payload.get("data") if network == "tiktok" else (payload.get("data") or {}).get("events")
    if not isinstance(events, list):
        return []
    if network == "tiktok":
        return [e.get("event_id", "") for e in events if isinstance(e, dict)]
    return [(e.get("metadata") or {}).get("conversion_id", "") for e in events if isinstance(e, dict)]


class CountingFakeNetwork(FakeAdNetwork):
    """Keeping every request body (as the tests' fake does) would hold gigabytes after a million postbacks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: dict[str, float] = {}  # dedup id -> time.monotonic() of its first arrival
        self.repeats = 0
        self.requests = 0
        self.sample_body: bytes | None = None  # the first postback request, as a shape for the bare client
        self._goal = 0
        self._reached = asyncio.Event()

    async def _record(self, request: web.Request, network: NetworkName, token: str | None,
                      pixel_id: str | None) -> ReceivedRequest:
        body = await request.read()
        arrived = time.monotonic()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        # Handed to the reply, not kept.
        received = ReceivedRequest(network, request.method, request.path, request.headers, b"", payload, token,
                                   pixel_id, arrived)
        ids = _dedup_ids(network, payload)
        if any(i.startswith(tiktok.VALIDATION_DEDUP_PREFIX) for i in ids):
            return received  # the save-time credential check, not a postback
        self.requests += 1
        if self.sample_body is None:
            self.sample_body = body
        for dedup_id in ids:
            if dedup_id in self.arrivals:
                self.repeats += 1
            else:
                self.arrivals[dedup_id] = arrived
        if self._goal and len(self.arrivals) >= self._goal:
            self._reached.set()
        return received

    def _took_in(self, received: ReceivedRequest, events: int) -> None:
        """Nothing kept of the requests taken in either."""

    def reset(self) -> None:
        self.arrivals.clear()
        self.repeats = 0
        self.requests = 0

    async def wait_for_postbacks(self, count: int, timeout_s: float) -> bool:
        """True once `count` distinct dedup ids have arrived; False when the timeout passes first."""
        self._goal = count
        self._reached = asyncio.Event()
        if len(self.arrivals) >= count:
            return True
        try:
            await asyncio.wait_for(self._reached.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._goal = 0
