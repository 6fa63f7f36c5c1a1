"""The dispatcher: claims due postbacks, sends them per config in batches, records every attempt; woken on ingest."""

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from server.core.postback import Outcome
from server.core.types import Network
from server.delivery.network_client import NetworkClient, Sent
from server.services import deliveries
from server.services.context import ServiceContext
from server.services.deliveries import Attempt, Batch, ClaimedDelivery, Lease, Target

log = logging.getLogger("postbacks.dispatch")
# How often an idle dispatcher on SQLite looks whether another process committed (a few microseconds a look).
_WATCH_S = 0.005
# How often held postbacks are looked through for windows that closed (or each probe interval, if shorter).
_HELD_WINDOW_CHECK_S = 60.0


def new_owner_id() -> str:
    """Names this process in leases, unique even across restarts of one host and pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class TokenBucket:
    """At most `rate` requests per second on average, with bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()

    def wait_s(self) -> float:
        """How long until a request may go: 0 when one may go now."""
        if self._rate <= 0:
            return 0.0
        self._refill()
        return max(0.0, (1 - self._tokens) / self._rate)

    def requests_now(self, at_most: int) -> int:
        """How many requests may go now, up to at_most."""
        if self._rate <= 0:
            return at_most
        self._refill()
        return max(0, min(at_most, int(self._tokens)))

    def reserve(self) -> None:
        """Spends a request now, for a batch claimed when wait_s() said one may go."""
        if self._rate > 0:
            self._refill()
            self._tokens -= 1

    async def take(self) -> None:
        wait_s = self.wait_s()
        while wait_s > 0:
            await asyncio.sleep(wait_s)
            wait_s = self.wait_s()
        self.reserve()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now


class Dispatcher:
    """One loop claims work; each claimed batch (one config) is sent by its own task, at most dispatch_concurrency
    at once and dispatch_batches_per_config of one config, so a config whose network is slow or down holds only
    its own slots and delays no other. Several batches of a config in flight let the next claim and render
    overlap the current send and its record, which is what a backlog or a steady stream needs."""

    def __init__(self, ctx: ServiceContext, network_client: NetworkClient, owner_id: str, *,
                 announced: Callable[[], bool] | None = None) -> None:
        self._ctx = ctx
        # Whether other processes' commits of due postbacks are announced to this one now (LISTEN on PostgreSQL):
        # while they are, an idle dispatcher does not look for them.
        self._announced = announced or (lambda: False)
        self._client = network_client
        self.owner_id = owner_id
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], Lease] = {}  # a batch being read and sent, by its task
        # A batch sent and being recorded, by its task: it holds no slot (see _deliver).
        self._recording: dict[asyncio.Task[None], Lease] = {}
        self._buckets: dict[int, TokenBucket] = {}
        # Configs whose postbacks the last claim found held by open circuits, and those whose batch was just refused
        # its credentials (skipped until that record commits and opens the circuit for every dispatcher).
        self._held: tuple[int, ...] = ()
        self._refused: set[int] = set()
        self._held_checked = 0.0  # event loop time of the last look for held postbacks past their windows
        self._held_check: asyncio.Task[None] | None = None
        # The database's data_version when the last claim began (SQLite): a change means another process committed.
        self._seen_version: int | None = None
        # When a change of data_version may end an idle wait again (event loop time), and whether it ended the
        # last one: see _run.
        self._watch_from = 0.0
        self._woken_by_watch = False
        # Whether due work may be waiting for a slot: only then does a batch's freed slot wake the claim loop.
        self._slot_wanted = True

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    def wake(self) -> None:
        """Called in-process once new postbacks are committed, so they go out without waiting for the poll."""
        self._wake.set()

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stops claiming, lets batches in flight finish within the grace, then abandons the rest and hands their
        leases back, so whichever dispatcher runs next sends them again at once instead of when the leases would
        have expired (the networks merge repeats by dedup id). A crash leaves that to the leases' expiry."""
        # The flag ends the loop even if the cancellation is lost: on Python 3.11 it can be, when it lands just
        # as the wake event fires.
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._held_check is not None:
            self._held_check.cancel()
            await asyncio.gather(self._held_check, return_exceptions=True)
        leases = {**self._in_flight, **self._recording}
        tasks = list(leases)
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        abandoned = [leases[task] for task in tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if abandoned:
            ids = [delivery_id for lease in abandoned for delivery_id in lease.delivery_ids]
            try:
                await deliveries.release_leases(self._ctx, self.owner_id, ids)
            except Exception:
                log.exception("could not hand back the leases of %d abandoned postbacks; they are sent again once "
                              "the leases expire", len(ids))

    async def _run(self) -> None:
        settings = self._ctx.settings
        while not self._stopping:
            self._wake.clear()
            timeout_s = settings.dispatch_poll_s
            # Batches waiting for their records to commit count only when they are many: the database is then
            # behind, and more claims would only queue on it.
            free = settings.dispatch_concurrency - len(self._in_flight) - max(
                0, len(self._recording) - settings.dispatch_concurrency)
            woken_by_watch, self._woken_by_watch = self._woken_by_watch, False
            full_configs = self._full_configs()
            self._slot_wanted = free <= 0 or bool(full_configs)
            if free > 0:
                self._seen_version = self._ctx.db.data_version()
                started = asyncio.get_running_loop().time()
                # A config whose rate limit has no request to spend now is not claimed: its due postbacks gather
                # into the batch that goes when it has one. Claimed anyway, each claim's few postbacks waited in
                # line for the limit (at 1,000 conversions/s, 50 requests/s: 36 ms of a postback's 70 ms).
                rate_limited = {row_id: wait_s for row_id, bucket in self._buckets.items()
                                if (wait_s := bucket.wait_s()) > 0}
                try:
                    claim = await deliveries.lease_due(self._ctx, self.owner_id, max_batches=free,
                                                       batch_size=settings.dispatch_batch_size,
                                                       skip_config_row_ids=[*full_configs, *rate_limited,
                                                                            *self._refused],
                                                       batches_allowed=self._batches_allowed)
                except Exception:
                    log.exception("claiming due postbacks failed; trying again in %.1fs", timeout_s)
                else:
                    self._held = claim.held_config_row_ids
                    if self._held:
                        self._check_held_windows()
                    # Each batch is read by its own task: the next lease is taken while this one's conversions
                    # are read, which took the claim loop half its time when they were read here.
                    for lease in claim.leases:
                        self._bucket(lease.config_row_id).reserve()  # the batch's request, spent at the claim
                        task = asyncio.create_task(self._deliver(lease), name=f"deliver config {lease.config_row_id}")
                        self._in_flight[task] = lease
                        task.add_done_callback(self._finished)
                    if claim.leases:
                        # Only a claim that filled a batch or every free slot may have left due work behind; after
                        # one that took all there was, the next claim waits for a wake (new postbacks, a free slot).
                        # In one process with ingest, that empty claim after each productive one was a third of the
                        # claims, each a read on the writer's database.
                        if len(claim.leases) >= free or any(len(lease.rows) >= settings.dispatch_batch_size
                                                            for lease in claim.leases):
                            timeout_s = 0
                            self._slot_wanted = True
                    else:
                        if woken_by_watch:
                            # Another process's commit brought nothing due (clicks, say): claims on such hunches
                            # take at most a tenth of the time, never waiting longer than a probe. They are cheap,
                            # unless the due rows are still leased to a process that died: each claim then walks
                            # past them on the index (about 3.5 ms for 4,000) until the leases expire.
                            finished = asyncio.get_running_loop().time()
                            self._watch_from = finished + min(9 * (finished - started), settings.dispatch_probe_s)
                        if claim.next_due_us is not None:
                            timeout_s = min(timeout_s, max(0.0, (claim.next_due_us - self._ctx.clock()) / 1e6))
                        if rate_limited:
                            timeout_s = min(timeout_s, *rate_limited.values())
            if timeout_s > 0:
                if limited_s := [wait_s for bucket in self._buckets.values() if (wait_s := bucket.wait_s()) > 0]:
                    # Until a rate-limited config has a request to spend, wakes are not heeded: they are mostly
                    # its own new postbacks and its batches finishing, and each claim they started found nothing
                    # it could take (at 1,000 conversions/s, most of the dispatcher's claims and a quarter of its
                    # CPU). Another config's new postbacks wait at most one request's interval for the next claim.
                    await asyncio.sleep(min(timeout_s, *limited_s))  # a pace set by the rate limit
                else:
                    await self._idle(timeout_s)

    async def _idle(self, timeout_s: float) -> None:
        """Until woken in-process, the timeout passes, or another process (an API-only process beside this one)
        may have committed due postbacks. On SQLite that shows in the database's data_version, looked at every few
        milliseconds: a change ends the wait, and the claim that follows reads before it writes anything.
        On PostgreSQL the other processes announce such commits (LISTEN/NOTIFY, server/store/notify.py), which
        wake it like an in-process commit; while that connection is down, an idle dispatcher makes one cheap read
        every dispatch_probe_s instead: claiming is a write, so it is not what polls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        probe_s = max(0.001, self._ctx.settings.dispatch_probe_s)
        watching = self._seen_version is not None
        watch_s = min(probe_s, _WATCH_S) if watching else probe_s
        next_probe = loop.time() + probe_s
        while (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, watch_s)):
                    await self._wake.wait()
                    return
            if remaining <= watch_s:
                continue
            # Even with batches in flight: a config with a free slot takes another process's fresh postbacks now,
            # not when one of its batches has been sent and recorded.
            if watching and loop.time() >= self._watch_from and self._ctx.db.data_version() != self._seen_version:
                self._woken_by_watch = True
                return
            # Without a data_version, batches in flight wake the loop as they finish; looking meanwhile would walk
            # a config's whole leased backlog on the index. Announced commits wake it too: then it does not look.
            if not self._in_flight and not self._recording and loop.time() >= next_probe and not self._announced():
                next_probe = loop.time() + probe_s
                if await self._due_work_waits():
                    return

    def _check_held_windows(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._held_checked < min(_HELD_WINDOW_CHECK_S, self._ctx.settings.credential_probe_interval_s):
            return
        if self._held_check is None or self._held_check.done():
            self._held_checked = now
            self._held_check = asyncio.create_task(self._fail_held_past_window(self._held), name="held windows")

    async def _fail_held_past_window(self, config_row_ids: tuple[int, ...]) -> None:
        try:
            await deliveries.fail_held_past_window(self._ctx, config_row_ids)
        except Exception:
            log.exception("looking for held postbacks past their windows failed; looking again later")

    async def _due_work_waits(self) -> bool:
        try:
            return await deliveries.has_due_work(self._ctx, some_held=bool(self._held))
        except Exception:
            log.exception("looking for due postbacks failed")
            return False

    def _batches_allowed(self, config_row_id: int) -> int:
        """How many batches of this config one claim may take: its free slots here, as far as its rate limit has
        requests to spend now (each batch spends one when claimed)."""
        return self._bucket(config_row_id).requests_now(self._free_slots(config_row_id))

    def _full_configs(self) -> list[int]:
        """Configs with as many batches in flight here as one config may have."""
        return [row_id for row_id in {lease.config_row_id for lease in self._in_flight.values()}
                if self._free_slots(row_id) <= 0]

    def _free_slots(self, config_row_id: int) -> int:
        """How many more batches of this config may be in flight here."""
        return self._ctx.settings.dispatch_batches_per_config - sum(
            1 for lease in self._in_flight.values() if lease.config_row_id == config_row_id)

    async def _deliver(self, lease: Lease) -> None:
        batch: Batch | None = None
        refused = False
        try:
            batch = await deliveries.load_leased(self._ctx, self.owner_id, lease)
            if batch is None:
                return
            target = batch.target
            attempts = await self._send(batch)
            last = attempts[-1].classification
            if last.outcome is Outcome.FAILED_CREDENTIALS:
                refused = True
                self._refused.add(lease.config_row_id)
            # Sent: the slot goes to the config's next batch now, not once this record commits. The record waits
            # its turn at the database's writer behind others; holding the slot meanwhile kept the network idle
            # about a third of the time while a backlog was sent (four slots, a cycle of about 70 ms of which the
            # record took 22).
            self._release_slot(lease)
            await deliveries.record_attempts(self._ctx, self.owner_id, target, attempts, probe=lease.probe)
            if lease.probe:
                self._ctx.metrics.count_probe(target.network.value, last.outcome.value)
            level = logging.DEBUG if last.outcome is Outcome.SUCCESS else logging.INFO
            log.log(level, "%s: %d postbacks sent%s, last outcome %s (%s)", target.name, len(batch.deliveries),
                    " as a probe" if lease.probe else "", last.outcome.value, deliveries.describe(last))
        except Exception:
            log.exception("sending %d postbacks of %s failed; they are sent again once their lease expires",
                          len(lease.rows), batch.target.name if batch else f"config row {lease.config_row_id}")
        finally:
            if refused:
                self._refused.discard(lease.config_row_id)

    def _release_slot(self, lease: Lease) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._recording[task] = self._in_flight.pop(task, lease)
        if self._slot_wanted:
            self._wake.set()  # a slot is free, and due work may be waiting for one

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._recording.pop(task, None)
        if self._slot_wanted or not (self._in_flight or self._recording):
            self._wake.set()  # a slot is free and due work may be waiting for one, or the loop may sleep until due

    def _bucket(self, config_row_id: int) -> TokenBucket:
        return self._buckets.setdefault(config_row_id, TokenBucket(self._ctx.settings.rate_limit_per_config))

    async def _send(self, batch: Batch) -> list[Attempt]:
        target = batch.target
        bucket = self._bucket(target.row_id)
        attempt_time_us, sent = await self._request(target, bucket, batch.deliveries, spent=True)
        attempts = [Attempt(d, attempt_time_us, sent.classification, sent.latency_ms) for d in batch.deliveries]
        # Reddit refuses a whole batch for one invalid event: resend each alone so the others still get through.
        if not (target.network is Network.REDDIT and len(attempts) > 1 and sent.classification.http_status == 400):
            return attempts
        settings = self._ctx.settings
        rate = settings.rate_limit_per_config
        expected_s = (len(attempts) / rate if rate > 0 else 0) + settings.http_total_timeout_s
        await deliveries.extend_leases(self._ctx, self.owner_id, [d.delivery_id for d in batch.deliveries],
                                       expected_s + settings.dispatch_lease_s)
        singles = await asyncio.gather(*(self._request(target, bucket, (d,)) for d in batch.deliveries))
        return [a._replace(resent_singly=True) for a in attempts] + [
            Attempt(d, time_us, single.classification, single.latency_ms)
            for d, (time_us, single) in zip(batch.deliveries, singles, strict=True)
        ]

    async def _request(self, target: Target, bucket: TokenBucket, claimed: tuple[ClaimedDelivery, ...], *,
                       spent: bool = False) -> tuple[int, Sent]:
        if not spent:  # a batch's first request was spent when it was claimed
            await bucket.take()
        attempt_time_us = self._ctx.clock()
        sent = await self._client.send(target.network, target.credentials, [d.rendered for d in claimed])
        self._ctx.metrics.observe_request_latency(target.network.value, sent.latency_ms)
        return attempt_time_us, sent
