"""Builds and runs the service: gRPC server with health and reflection, database, dispatcher; graceful stop."""

import asyncio
import contextlib
import errno
import logging
import pathlib
import socket
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

from postbacks.v1 import (
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    game_settings_service_pb2,
    game_settings_service_pb2_grpc,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
    privacy_service_pb2,
    privacy_service_pb2_grpc,
)
from server.api.auth import Authenticator, AuthInterceptor, StreamSlots
from server.api.configs import PostbackConfigServicer
from server.api.delivery_logs import DeliveryLogServicer
from server.api.errors import ErrorInterceptor
from server.api.events import EventServicer
from server.api.game_settings import GameSettingsServicer
from server.api.privacy import PrivacyServicer
from server.core.client_address import parse_networks
from server.delivery.dispatcher import Dispatcher, new_owner_id
from server.delivery.network_client import NetworkClient
from server.errors import StartupError
from server.metrics import MetricsServer
from server.secrets import SecretBox, open_secret_box, read_private_file, write_private_file
from server.services import api_keys, delivery_logs, outbox_stats
from server.services.context import ServiceContext, wall_clock_us
from server.services.ingest import GroupCommitter
from server.services.log_tail import LogTail
from server.settings import Settings
from server.store.db import Database
from server.store.notify import DELIVERY_LOGS, POSTBACKS_DUE, Notifications
from server.store.statistics import keep_statistics_fresh
from server.web.connect import connect_applications
from server.web.http_api import HttpApi, OriginList
from server.web.server import HttpServer

log = logging.getLogger("postbacks")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (event_service_pb2, "EventService"),
        (postback_config_service_pb2, "PostbackConfigService"),
        (delivery_log_service_pb2, "DeliveryLogService"),
        (privacy_service_pb2, "PrivacyService"),
        (game_settings_service_pb2, "GameSettingsService"),
    )
)


class App:
    """One running service process. `start()` returns once it serves; `stop()` drains and closes."""

    def __init__(self, settings: Settings, *, clock=wall_clock_us):  # type: ignore[no-untyped-def]
        if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
            given, missing = ("--tls-cert-file", "--tls-key-file") if settings.tls_cert_file else \
                ("--tls-key-file", "--tls-cert-file")
            raise StartupError(f"{given} is set but {missing} is not: TLS needs both (or neither, for plaintext)")
        refuse_address_in_use(settings.listen)
        if settings.http_listen and settings.role != "dispatcher":
            refuse_address_in_use(settings.http_listen, "--http-listen")
        self.settings = settings
        self.db = Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
        self.network_client = NetworkClient(settings, clock)
        self.ctx = ServiceContext(
            settings=settings,
            db=self.db,
            secrets=_secret_box(settings),
            credential_checker=self.network_client,
            clock=clock,
        )
        self.health = health.aio.HealthServicer()
        # On PostgreSQL, replicas announce their commits to each other; SQLite's data_version tells the same.
        notifications = self.notifications = None if self.db.is_sqlite else Notifications(self.db.url)
        self.dispatcher: Dispatcher | None = None
        if settings.role in ("all", "dispatcher"):
            self.dispatcher = Dispatcher(self.ctx, self.network_client, new_owner_id(),
                                         announced=(lambda: notifications.listening) if notifications else None)
            self.ctx.outbox_listeners.append(self.dispatcher.wake)
        # One reader of new delivery-log rows for every StreamDeliveryLogs call of this process.
        self.log_tail = LogTail(self.db, poll_s=settings.log_stream_poll_s, settle_s=settings.log_stream_settle_s,
                                clock_us=clock)
        self.ctx.delivery_log_listeners.append(self.log_tail.wake)
        if notifications is not None:
            self.ctx.outbox_listeners.append(lambda: notifications.announce(POSTBACKS_DUE))
            self.ctx.delivery_log_listeners.append(lambda: notifications.announce(DELIVERY_LOGS))
            if self.dispatcher is not None:
                notifications.listen(POSTBACKS_DUE, self.dispatcher.wake)
            if settings.role != "dispatcher":  # a dispatcher serves no log streams
                notifications.listen(DELIVERY_LOGS, self.log_tail.wake)
        self.ctx.metrics.open_log_streams.set_function(lambda: self.log_tail.followers)
        self.metrics_server: MetricsServer | None = None
        # The default deployment's dispatcher process, whose metrics this process's /metrics serves as well.
        self.other_process_metrics: Callable[[], Awaitable[bytes]] | None = None
        self.metrics_port: int | None = None
        self._log_purge_task: asyncio.Task[None] | None = None
        self._statistics_task: asyncio.Task[None] | None = None
        self.server: grpc.aio.Server | None = None
        self._tls: grpc.ServerCredentials | None = None
        self.port: int | None = None
        self.http_server: HttpServer | None = None
        self.http_port: int | None = None
        # Development mode only: the full-access key kept in settings.dev_key_file.
        self.dev_key: str | None = None

    @property
    def open_log_streams(self) -> int:
        return self.log_tail.followers

    async def start(self) -> int:
        self._tls = self._tls_credentials()
        try:
            return await self._start()
        except BaseException:
            if self.server is not None:
                await self.server.stop(0)
            await self._close_resources()
            raise

    async def _start(self) -> int:
        try:
            await self.db.migrate()
        except (OSError, SQLAlchemyError) as e:
            url = self.db.url.render_as_string(hide_password=True)
            raise StartupError(f"cannot open the database {url}: {' '.join(str(e).split())[:300]}") from None
        await self.network_client.start()
        if self.settings.dev_key_file:
            self.dev_key = await self._development_key()
        authenticator = Authenticator(lambda key_sha256: api_keys.find_grant(self.ctx, key_sha256),
                                      cache_s=self.settings.api_key_cache_s,
                                      development_mode=bool(self.settings.dev_key_file))
        stream_slots = StreamSlots(self.settings.max_streams_per_key)
        auth = AuthInterceptor(authenticator, stream_slots)
        # The error interceptor comes first so that it turns the auth interceptor's refusals into rich status.
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor(), auth],
            # Without port sharing a second server on a taken port fails to bind instead of taking every other call.
            options=[("grpc.max_receive_message_length", self.settings.max_receive_message_bytes),
                     ("grpc.so_reuseport", 0)],
        )
        api_services = SERVICE_NAMES if self.settings.role != "dispatcher" else ()  # a dispatcher serves health only
        if api_services:
            # One servicer per service answers both transports.
            servicers = {
                "events": EventServicer(self.ctx, GroupCommitter(self.ctx)),
                "configs": PostbackConfigServicer(self.ctx),
                "game_settings": GameSettingsServicer(self.ctx),
                "delivery_logs": DeliveryLogServicer(self.ctx, self.log_tail, self.settings.log_stream_heartbeat_s),
                "privacy": PrivacyServicer(self.ctx),
            }
            event_service_pb2_grpc.add_EventServiceServicer_to_server(servicers["events"], server)
            postback_config_service_pb2_grpc.add_PostbackConfigServiceServicer_to_server(servicers["configs"], server)
            game_settings_service_pb2_grpc.add_GameSettingsServiceServicer_to_server(servicers["game_settings"], server)
            delivery_log_service_pb2_grpc.add_DeliveryLogServiceServicer_to_server(servicers["delivery_logs"], server)
            privacy_service_pb2_grpc.add_PrivacyServiceServicer_to_server(servicers["privacy"], server)
            if self.settings.http_listen:
                self.http_server = self._http_server(servicers, authenticator, stream_slots)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*api_services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        self.port = self._add_port(server)
        await server.start()
        self.server = server
        if self.http_server is not None:
            self.http_port = await self.http_server.start()
        if self.notifications is not None:
            self.notifications.start()
        self.log_tail.start()
        self._log_purge_task = asyncio.create_task(
            delivery_logs.purge_expired_logs_periodically(self.ctx, self.settings.log_purge_interval_s),
            name="delivery-log-purge")
        if not self.db.is_sqlite:
            self._statistics_task = asyncio.create_task(
                keep_statistics_fresh(self.db, self.settings.pg_statistics_interval_s), name="planner-statistics")
        if self.settings.metrics_listen:
            self.metrics_server = MetricsServer(self.ctx.metrics, self.settings.metrics_listen,
                                                lambda: outbox_stats.refresh_outbox_gauges(self.ctx),
                                                self.other_process_metrics)
            self.metrics_port = await self.metrics_server.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        for name in ("", *api_services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s on port %d%s (database %s)",
                 "dispatching; gRPC health" if self.settings.role == "dispatcher" else "serving gRPC", self.port,
                 f", HTTP on port {self.http_port}" if self.http_port else "",
                 self.db.url.render_as_string(hide_password=True))
        return self.port

    def _http_server(self, servicers: dict[str, object], authenticator: Authenticator,
                     stream_slots: StreamSlots) -> HttpServer:
        settings = self.settings
        try:
            trusted_proxies = parse_networks(settings.trusted_proxy)
        except ValueError as e:
            raise StartupError(f"--trusted-proxy: {e}") from None
        api = HttpApi(connect_applications(servicers, stream_slots, settings.max_receive_message_bytes),
                      authenticator,
                      OriginList(lambda: api_keys.publishable_origins(self.ctx), settings.api_key_cache_s),
                      trusted_proxies=trusted_proxies, rate_per_ip=settings.publishable_rate_per_ip,
                      rate_per_key=settings.publishable_rate_per_key,
                      max_body_bytes=settings.max_receive_message_bytes)
        return HttpServer(api, settings.http_listen, shutdown_grace_s=settings.shutdown_grace_s,
                          tls_cert_file=settings.tls_cert_file, tls_key_file=settings.tls_key_file)

    def _tls_credentials(self) -> grpc.ServerCredentials | None:
        """TLS when a certificate and key are configured, plaintext (None) otherwise."""
        cert_file, key_file = self.settings.tls_cert_file, self.settings.tls_key_file
        if not cert_file:
            return None
        return grpc.ssl_server_credentials([(_read_tls_file(key_file, "--tls-key-file"),
                                             _read_tls_file(cert_file, "--tls-cert-file"))])

    def _add_port(self, server: grpc.aio.Server) -> int:
        listen = self.settings.listen
        try:
            port = server.add_insecure_port(listen) if self._tls is None else server.add_secure_port(listen, self._tls)
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(f"cannot listen on {listen}; choose another address with --listen HOST:PORT")
        return port

    async def _development_key(self) -> str:
        """The full-access development key kept in dev_key_file: created once, and again if it was revoked."""
        path = pathlib.Path(self.settings.dev_key_file)
        remembered = read_private_file(path)
        key, created = await api_keys.ensure_development_key(self.ctx, remembered)
        if created:
            write_private_file(path, key + "\n")
        log.warning("development mode: development keys are honoured; never run like this in production "
                    "(the development key is in %s)", path)
        return key

    async def _close_resources(self) -> None:
        """What a start that failed half-way had opened."""
        await self.network_client.close()
        if self.notifications is not None:
            await self.notifications.stop()
        await self.db.close()

    async def stop(self, grace_s: float | None = None) -> None:
        """Says NOT_SERVING, stops accepting calls, lets in-flight calls finish within the grace, then closes."""
        await self.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        # Log streams never end on their own: end them now so they do not hold the whole grace period.
        self.log_tail.close()
        if self.server is not None:
            await asyncio.gather(self.server.stop(grace),
                                 self.http_server.stop() if self.http_server is not None else asyncio.sleep(0))
        await self.log_tail.stop()
        for task in (self._log_purge_task, self._statistics_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        await self._close_resources()

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


def refuse_address_in_use(listen: str, flag: str = "--listen") -> None:
    """Fails start-up in one line when the address is malformed or another process holds the port. A plain bind
    says so before gRPC tries, whose own failure is also a log line of its C core."""
    host, colon, port_text = listen.rpartition(":")
    if not colon or not port_text.isdigit() or int(port_text) > 65535:
        raise StartupError(f"{flag} {listen!r} is not HOST:PORT with a port from 0 to 65535 (0 picks a free one)")
    if int(port_text) == 0:
        return
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"cannot listen on {listen}: {e.strerror}; choose another address with {flag} HOST:PORT") \
            from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: a closing port is free
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise StartupError(
                        f"port {port_text} is already in use on {host or 'every address'} (another server?); "
                        f"choose another with {flag} HOST:PORT (port 0 picks a free one)") from None
                if e.errno != errno.EADDRNOTAVAIL:  # e.g. IPv6 off: gRPC skips such an address too
                    raise StartupError(f"cannot listen on {listen}: {e.strerror}; choose another address with "
                                       f"{flag} HOST:PORT") from None


def _secret_box(settings: Settings) -> SecretBox:
    try:
        return open_secret_box(settings.secret_keys, settings.data_dir)
    except ValueError as e:  # base64 that does not decode, or a key of the wrong length
        raise StartupError(f"the secret keys (--secret-keys, POSTBACKS_SECRET_KEYS or <data_dir>/secret.key) are "
                           f"unusable: {e}; each is 32 random bytes in base64 (openssl rand -base64 32)") from None


def _read_tls_file(path: str, flag: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as e:
        raise StartupError(f"cannot read {flag} {path}: {e.strerror}") from None
