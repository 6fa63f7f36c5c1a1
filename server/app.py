"""Builds and runs the service: gRPC server with health and reflection, database, dispatcher; graceful stop."""

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
from server.api.configs import PostbackConfigServicer
from server.api.errors import ErrorInterceptor
from server.api.events import EventServicer
from server.api.game_settings import GameSettingsServicer
from server.delivery.network_client import NetworkClient
from server.secrets import SecretBox, load_or_create_keys
from server.services.context import ServiceContext, wall_clock_us
from server.settings import Settings
from server.store.db import Database

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
        self.settings = settings
        self.db = Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
        self.network_client = NetworkClient(settings, clock)
        self.ctx = ServiceContext(
            settings=settings,
            db=self.db,
            secrets=SecretBox(load_or_create_keys(settings.secret_keys, settings.data_dir)),
            credential_checker=self.network_client,
            clock=clock,
        )
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        await self.db.migrate()
        await self.network_client.start()
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        event_service_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(self.ctx), server)
        postback_config_service_pb2_grpc.add_PostbackConfigServiceServicer_to_server(
            PostbackConfigServicer(self.ctx), server)
        game_settings_service_pb2_grpc.add_GameSettingsServiceServicer_to_server(GameSettingsServicer(self.ctx), server)
        delivery_log_service_pb2_grpc.add_DeliveryLogServiceServicer_to_server(
            delivery_log_service_pb2_grpc.DeliveryLogServiceServicer(), server)
        privacy_service_pb2_grpc.add_PrivacyServiceServicer_to_server(
            privacy_service_pb2_grpc.PrivacyServiceServicer(), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        self.port = server.add_insecure_port(self.settings.listen)
        if not self.port:
            raise RuntimeError(f"could not listen on {self.settings.listen}")
        await server.start()
        self.server = server
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %d (database %s)", self.port, self.db.url.render_as_string(hide_password=True))
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Says NOT_SERVING, stops accepting calls, lets in-flight calls finish within the grace, then closes."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
        await self.network_client.close()
        await self.db.close()

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()
