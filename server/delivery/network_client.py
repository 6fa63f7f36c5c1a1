"""The one HTTP client to the ad networks: sends rendered requests with shared connections and classifies replies."""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from server.core.adapters import ADAPTERS
from server.core.postback import (
    Classification,
    NetworkCredentials,
    Outcome,
    TransportError,
    classify_transport_error,
)
from server.core.types import EventType, Network
from server.services.credentials import CheckResult, CredentialCheck
from server.settings import Settings

log = logging.getLogger("postbacks.network")


@dataclass(frozen=True, slots=True)
class Sent:
    classification: Classification
    latency_ms: int


class NetworkClient:
    """Owns the aiohttp session: one connection pool for all configs, with connect and total timeouts."""

    def __init__(self, settings: Settings, clock_us):  # type: ignore[no-untyped-def]
        self._base_urls = {Network.TIKTOK: settings.tiktok_base_url, Network.REDDIT: settings.reddit_base_url}
        self._timeout = aiohttp.ClientTimeout(total=settings.http_total_timeout_s,
                                              sock_connect=settings.http_connect_timeout_s)
        self._connections = max(settings.dispatch_concurrency * 2, 8)
        self._clock_us = clock_us
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections),
                # Our own headers only: no cookies carried between configs or networks.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, network: Network, credentials: NetworkCredentials, rendered: Sequence[bytes],
                   test_code: str | None = None) -> Sent:
        """One request carrying these events, each as the adapter's render_event wrote it."""
        adapter = ADAPTERS[network]
        request = adapter.request_of_rendered(self._base_urls[network], credentials, rendered, test_code)
        await self.start()
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.request(request.method, request.url, headers=dict(request.headers),
                                             data=request.body, allow_redirects=False) as response:
                body = await response.read()
                classification = adapter.classify_response(response.status, body, response.headers)
        except TimeoutError:
            classification = classify_transport_error(TransportError.TIMEOUT)
        except aiohttp.ClientError as e:
            # The exception text names host and port only; the token travels in a header, never in the URL.
            classification = classify_transport_error(TransportError.CONNECTION, type(e).__name__)
        return Sent(classification, int((time.perf_counter() - started) * 1000))

    async def check(self, network: Network, credentials: NetworkCredentials, event_type: EventType,
                    test_code: str | None) -> CredentialCheck:
        """Credential validation: one synthetic event; not a delivery, so it is not logged as one."""
        adapter = ADAPTERS[network]
        event = adapter.validation_event(event_type, self._clock_us())
        sent = await self.send(network, credentials, [adapter.render_event(event)], test_code)
        c = sent.classification
        result = {
            Outcome.SUCCESS: CheckResult.ACCEPTED,
            Outcome.FAILED_CREDENTIALS: CheckResult.REJECTED,
            # The synthetic event is well-formed, so a payload rejection means the pixel or account refused it.
            Outcome.FAILED_PAYLOAD: CheckResult.REJECTED,
            Outcome.RETRY_THROTTLED: CheckResult.THROTTLED,
        }.get(c.outcome, CheckResult.UNREACHABLE)
        log.info("credential check for %s: %s (HTTP %s, code %s)", network.value, result.value, c.http_status,
                 c.network_code)
        return CredentialCheck(result, c.http_status, c.network_code, c.message, c.request_id,
                               c.retry_after_s if result == CheckResult.THROTTLED else None)


