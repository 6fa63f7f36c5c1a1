"""Prometheus metrics for operators: one registry per App, served on its own port when metrics_listen is set."""

import logging
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from server.core.events import EventKind, NewEvent
from server.core.postback import Outcome
from server.core.types import AttemptStatus, Network, NoPostbackReason

log = logging.getLogger("postbacks.metrics")

# Network round trips: from a fast accept to a request that runs into the total timeout.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)


class DecidedConversion(Protocol):
    postback_owed: bool
    no_postback_reason: object  # a NoPostbackReason (a str enum) or None


class Metrics:
    """The service's metrics. Counters are bumped in one line where the fact becomes durable (after commit);
    the outbox gauges are read from the database on each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_ingested = Counter(
            "postbacks_events_ingested", "New events stored (duplicates not counted), by kind.",
            ["kind"], registry=self.registry)
        self.conversions = Counter(
            "postbacks_conversions", "Conversions decided on arrival, by decision and the reason when none is owed.",
            ["decision", "reason"], registry=self.registry)
        self.delivery_attempts = Counter(
            "postbacks_delivery_attempts", "Postback attempts (one per conversion per HTTP request), by network "
            "and outcome (success, failed, retried).", ["network", "outcome"], registry=self.registry)
        self.attempt_latency = Histogram(
            "postbacks_delivery_attempt_latency_seconds", "Round-trip time of HTTP requests to the networks.",
            ["network"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.outbox_pending = Gauge(
            "postbacks_outbox_pending", "Postbacks owed and not yet delivered (the outbox depth), as of the scrape.",
            registry=self.registry)
        self.outbox_oldest_age = Gauge(
            "postbacks_outbox_oldest_pending_age_seconds", "Age of the oldest postback not yet delivered; 0 when "
            "none is pending.", registry=self.registry)
        self.circuit_probes = Counter(
            "postbacks_circuit_probes", "Probe requests of configs whose circuit is open, by network and outcome "
            "(success and failed_payload close the circuit).", ["network", "outcome"], registry=self.registry)
        self.open_circuits = Gauge(
            "postbacks_circuit_open", "1 for each postback config whose circuit is open, by config, cause "
            "(credentials, transient) and state (open, probing), as of the scrape; a closed circuit has no series.",
            ["postback_config", "cause", "state"], registry=self.registry)
        self.held_postbacks = Gauge(
            "postbacks_held_postbacks", "Postbacks held by a config's open circuit, by config, as of the scrape.",
            ["postback_config"], registry=self.registry)
        self.open_log_streams = Gauge(
            "postbacks_log_streams_open", "StreamDeliveryLogs calls open on this process.", registry=self.registry)
        # Every known series starts at 0, so a rate over the first occurrence is not lost and dashboards are not empty.
        for kind in EventKind:
            self.events_ingested.labels(kind=kind.value)
        self.conversions.labels(decision="postback_owed", reason="")
        for reason in NoPostbackReason:
            self.conversions.labels(decision="no_postback", reason=reason.value)
        for network in Network:
            for outcome in Outcome:
                self.circuit_probes.labels(network=network.value, outcome=outcome.value)
            self.attempt_latency.labels(network=network.value)
            for status in AttemptStatus:
                self.delivery_attempts.labels(network=network.value, outcome=status.value)

    def record_ingest(self, new_events: Iterable[NewEvent], conversions: Mapping[str, DecidedConversion]) -> None:
        """After an ingest transaction commits: the events it stored, and the decisions by event id."""
        # Counted first, then added once per series: a label lookup per event would cost more than the count.
        kinds: Tally[str] = Tally()
        decisions: Tally[tuple[str, str]] = Tally()
        for event in new_events:
            kinds[event.kind.value] += 1
            conversion = conversions.get(event.event_id)
            if conversion is not None:
                decision = "postback_owed" if conversion.postback_owed else "no_postback"
                decisions[decision, str(conversion.no_postback_reason or "")] += 1
        for kind, count in kinds.items():
            self.events_ingested.labels(kind=kind).inc(count)
        for (decision, reason), count in decisions.items():
            self.conversions.labels(decision=decision, reason=reason).inc(count)

    def count_attempts(self, network: str, status: str, count: int) -> None:
        """After delivery-log rows commit: one count per row (one conversion's attempt), by network and status."""
        self.delivery_attempts.labels(network=network, outcome=status).inc(count)

    def observe_request_latency(self, network: str, latency_ms: int) -> None:
        """Once per HTTP request to a network (the postbacks of a batch share one request)."""
        self.attempt_latency.labels(network=network).observe(latency_ms / 1000)

    def set_outbox(self, pending: int, oldest_age_s: float) -> None:
        self.outbox_pending.set(pending)
        self.outbox_oldest_age.set(oldest_age_s)

    def count_probe(self, network: str, outcome: str) -> None:
        """After a probe's record commits."""
        self.circuit_probes.labels(network=network, outcome=outcome).inc()

    def set_circuits(self, open_circuits: Iterable[tuple[str, str, str, int]]) -> None:
        """Each open circuit as (config name, cause, state, held postbacks); circuits closed since go away."""
        self.open_circuits.clear()
        self.held_postbacks.clear()
        for name, cause, state, held in open_circuits:
            self.open_circuits.labels(postback_config=name, cause=cause, state=state).set(1)
            self.held_postbacks.labels(postback_config=name).set(held)

    def exposition(self, other_process: bytes = b"") -> bytes:
        """The metrics in the Prometheus text format, with another process's of the same service added in (the
        default deployment's dispatcher process)."""
        if not other_process:
            return generate_latest(self.registry)
        own = self.registry

        class Merged:
            def collect(self) -> Iterator[Metric]:
                return merge_families(own.collect(), other_process)

        return generate_latest(Merged())  # type: ignore[arg-type]


class MetricsServer:
    """GET /metrics on its own aiohttp listener. `before_scrape` refreshes database-backed gauges by awaiting
    the database, so a scrape never blocks the event loop; if it fails the scrape still answers."""

    def __init__(self, metrics: Metrics, listen: str, before_scrape: Callable[[], Awaitable[None]],
                 other_process: Callable[[], Awaitable[bytes]] | None = None):
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]") or "127.0.0.1", int(port)
        self._metrics = metrics
        self._before_scrape = before_scrape
        self._other_process = other_process
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("serving Prometheus metrics on http://%s:%d/metrics", self._host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _scrape(self, request: web.Request) -> web.Response:
        try:
            await self._before_scrape()
        except Exception:
            log.exception("refreshing the outbox gauges failed; serving their previous values")
        other = await self._other_process() if self._other_process is not None else b""
        return web.Response(body=self._metrics.exposition(other), headers={"Content-Type": CONTENT_TYPE_LATEST})


def merge_families(own: Iterable[Metric], other_text: bytes) -> Iterator[Metric]:
    """This process's metric families with another process's added in: counters, histograms and gauges summed
    by series (the two count different things: ingest here, delivery there); creation times are this process's."""
    others = {family.name: family for family in text_string_to_metric_families(other_text.decode())}
    for family in own:
        other = others.get(family.name)
        if other is not None:
            theirs = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in other.samples
                      if not s.name.endswith("_created")}
            keys = set()
            merged: list[Sample] = []
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                keys.add(key)
                merged.append(sample._replace(value=sample.value + theirs.get(key, 0.0)))
            merged += [Sample(name, dict(labels), value) for (name, labels), value in theirs.items()
                       if (name, labels) not in keys]
            family.samples = merged
        yield family
