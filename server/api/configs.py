"""PostbackConfigService: a game's postback configs and their credentials."""

import math

import grpc
from google.protobuf import duration_pb2

from postbacks.v1 import postback_config_pb2, postback_config_service_pb2_grpc
from postbacks.v1 import postback_config_service_pb2 as pb
from server.api import translate
from server.core import configs as rules
from server.core import limits
from server.core.circuit import CircuitCause, CircuitState
from server.core.postback import NetworkCredentials
from server.core.types import ConfigHealth, EventType, FailureReason, Network
from server.errors import InvalidArgument, Violations
from server.services import configs, replay
from server.services.configs import CircuitView, ConfigChanges, ConfigView, NewConfig
from server.services.credentials import CheckResult, CredentialCheck

_CONFIG_NAME = "games/{game}/postbackConfigs/{id}"
_CONFIG_SHAPE = "games/{game}/postbackConfigs/{postback_config}"
UPDATABLE_FIELDS = ("display_name", "enabled", "trigger_events")
HEALTH_TO_PROTO = {h: postback_config_pb2.PostbackConfigHealth.Value(f"POSTBACK_CONFIG_HEALTH_{h.name}")
                   for h in ConfigHealth}
CHECK_RESULT_TO_PROTO = {r: postback_config_pb2.CredentialCheckResult.Value(f"CREDENTIAL_CHECK_RESULT_{r.name}")
                         for r in CheckResult}
CIRCUIT_STATE_TO_PROTO = {s: postback_config_pb2.PostbackCircuitState.Value(f"POSTBACK_CIRCUIT_STATE_{s.name}")
                          for s in CircuitState}
CIRCUIT_CAUSE_TO_PROTO = {CircuitCause.CREDENTIALS: postback_config_pb2.POSTBACK_CIRCUIT_CAUSE_CREDENTIALS,
                          CircuitCause.TRANSIENT: postback_config_pb2.POSTBACK_CIRCUIT_CAUSE_TRANSIENT_FAILURES}


def parse_config_name(name: str, field_path: str = "name") -> tuple[str, str]:
    game_id, config_id = translate.parse_name(name, _CONFIG_NAME, field_path, _CONFIG_SHAPE)
    return game_id, config_id


def config_to_proto(view: ConfigView) -> postback_config_pb2.PostbackConfig:
    return postback_config_pb2.PostbackConfig(
        name=translate.config_name(view.game_id, view.config_id),
        display_name=view.display_name,
        network=translate.NETWORK_TO_PROTO[view.network],
        access_token_hint=view.access_token_hint,
        pixel_id=view.pixel_id,
        trigger_events=[translate.EVENT_TYPE_TO_PROTO[e] for e in view.trigger_events],
        enabled=view.enabled,
        health=HEALTH_TO_PROTO[view.health],
        create_time=translate.us_to_timestamp(view.create_time_us),
        update_time=translate.us_to_timestamp(view.update_time_us),
        credentials_update_time=translate.us_to_timestamp(view.credentials_update_time_us),
        circuit=_circuit_to_proto(view.circuit),
    )


def _circuit_to_proto(circuit: CircuitView) -> postback_config_pb2.PostbackCircuit:
    return postback_config_pb2.PostbackCircuit(
        state=CIRCUIT_STATE_TO_PROTO[circuit.state],
        cause=CIRCUIT_CAUSE_TO_PROTO[circuit.cause] if circuit.cause else None,
        open_time=translate.us_to_timestamp(circuit.open_time_us),
        next_probe_time=translate.us_to_timestamp(circuit.next_probe_time_us),
        failed_probe_count=circuit.failed_probes,
        held_postback_count=circuit.held_count,
        oldest_held_postback_create_time=translate.us_to_timestamp(circuit.oldest_held_create_time_us),
    )


def replay_from_proto(request: pb.RetryFailedPostbacksRequest) -> tuple[str, str, int | None, int | None,
                                                                       frozenset[FailureReason]]:
    violations = Violations()
    game_id, config_id = parse_config_name(request.name)
    start_us = translate.optional_timestamp_to_us(request, "start_time", violations)
    end_us = translate.optional_timestamp_to_us(request, "end_time", violations)
    if start_us is not None and end_us is not None and end_us <= start_us:
        violations.add("end_time", "must be after start_time")
    reasons = set()
    for i, value in enumerate(request.failure_reasons):
        reason = translate.FAILURE_REASON_FROM_PROTO.get(value)
        if reason is None:
            violations.add(f"failure_reasons[{i}]", "must be a known POSTBACK_FAILURE_REASON_*, not unspecified")
        else:
            reasons.add(reason)
    violations.raise_if_any()
    return game_id, config_id, start_us, end_us, frozenset(reasons)


def _network(value: int, field_path: str, violations: Violations) -> Network | None:
    network = translate.NETWORK_FROM_PROTO.get(value)
    if network is None:
        violations.add(field_path, "must be NETWORK_TIKTOK or NETWORK_REDDIT")
    return network


def _trigger_events(values, field_path: str, violations: Violations) -> frozenset[EventType]:  # type: ignore[no-untyped-def]
    events = set()
    for i, value in enumerate(values):
        event = translate.EVENT_TYPE_FROM_PROTO.get(value)
        if event is None:
            violations.add(f"{field_path}[{i}]", "must be CONVERSION_EVENT_TYPE_GAME_LAUNCH or CONVERSION_EVENT_TYPE_PURCHASE")
        else:
            events.add(event)
    if not values:
        violations.add(field_path, "at least one trigger event is required")
    return frozenset(events)


def _display_name(value: str, field_path: str, violations: Violations) -> str:
    value = value.strip()
    if problem := translate.text_problem(value, limits.DISPLAY_NAME):
        violations.add(field_path, problem)
    return value


def _credentials(msg: postback_config_pb2.PostbackCredentials, network: Network | None, field_path: str,
                 violations: Violations, *, pixel_required: bool = True) -> NetworkCredentials:
    token = msg.access_token.strip()
    if problem := rules.access_token_problem(token):
        violations.add(f"{field_path}.access_token", problem)
    pixel_id = msg.pixel_id.strip()
    if network and (pixel_id or pixel_required) and (problem := rules.pixel_id_problem(network, pixel_id)):
        violations.add(f"{field_path}.pixel_id", problem)
    return NetworkCredentials(access_token=token, pixel_id=pixel_id)


def _test_code(value: str, violations: Violations) -> str | None:
    value = value.strip()
    if len(value) > limits.TEST_CODE:
        violations.add("test_code", f"must be at most {limits.TEST_CODE} characters")
    return value or None


def check_to_proto(check: CredentialCheck) -> pb.ValidatePostbackCredentialsResponse:
    return pb.ValidatePostbackCredentialsResponse(
        result=CHECK_RESULT_TO_PROTO[check.result],
        http_status=check.http_status or 0,
        network_code=check.network_code or "",
        message=check.message,
        network_request_id=check.request_id or "",
        retry_delay=duration_pb2.Duration(seconds=math.ceil(check.retry_after_s))
        if check.retry_after_s is not None else None,
    )


def new_config_from_proto(request: pb.CreatePostbackConfigRequest) -> tuple[str, str | None, NewConfig, str | None]:
    violations = Violations()
    game_id = translate.parse_game(request.parent)
    config_id = request.postback_config_id.strip() or None
    if config_id:
        try:
            translate.parse_name(f"games/{game_id}/postbackConfigs/{config_id}", _CONFIG_NAME, "postback_config_id", "")
        except InvalidArgument:
            violations.add("postback_config_id", "must be 1 to 63 lower-case letters, digits and hyphens")
    msg = request.postback_config
    network = _network(msg.network, "postback_config.network", violations)
    if not msg.HasField("credentials"):
        violations.add("postback_config.credentials", "is required")
    credentials = _credentials(msg.credentials, network, "postback_config.credentials", violations)
    new = NewConfig(
        display_name=_display_name(msg.display_name, "postback_config.display_name", violations),
        network=network,  # type: ignore[arg-type]
        credentials=credentials,
        trigger_events=_trigger_events(msg.trigger_events, "postback_config.trigger_events", violations),
        enabled=msg.enabled if msg.HasField("enabled") else True,
    )
    test_code = _test_code(request.test_code, violations)
    violations.raise_if_any()
    return game_id, config_id, new, test_code


def changes_from_proto(request: pb.UpdatePostbackConfigRequest) -> tuple[str, str, ConfigChanges]:
    violations = Violations()
    game_id, config_id = parse_config_name(request.postback_config.name, "postback_config.name")
    paths = translate.mask_paths(request.update_mask, violations)
    if not paths:
        violations.add("update_mask", f"is required: name the fields to change ({', '.join(UPDATABLE_FIELDS)})")
    for path in paths:
        if path == "credentials" or path.startswith("credentials."):
            violations.add("update_mask", "credentials change only through RotatePostbackCredentials")
        elif path not in UPDATABLE_FIELDS:
            violations.add("update_mask", f"{path[:64]!r} cannot be updated; updatable: {', '.join(UPDATABLE_FIELDS)}")
    msg = request.postback_config
    changes = ConfigChanges(
        display_name=_display_name(msg.display_name, "postback_config.display_name", violations)
        if "display_name" in paths else None,
        enabled=msg.enabled if "enabled" in paths else None,
        trigger_events=_trigger_events(msg.trigger_events, "postback_config.trigger_events", violations)
        if "trigger_events" in paths else None,
    )
    violations.raise_if_any()
    return game_id, config_id, changes


class PostbackConfigServicer(postback_config_service_pb2_grpc.PostbackConfigServiceServicer):
    def __init__(self, ctx):  # type: ignore[no-untyped-def]
        self._ctx = ctx

    async def CreatePostbackConfig(self, request: pb.CreatePostbackConfigRequest,
                                   context: grpc.aio.ServicerContext) -> pb.CreatePostbackConfigResponse:
        game_id, config_id, new, test_code = new_config_from_proto(request)
        view = await configs.create_config(self._ctx, game_id, config_id, new, test_code)
        return pb.CreatePostbackConfigResponse(postback_config=config_to_proto(view))

    async def GetPostbackConfig(self, request: pb.GetPostbackConfigRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetPostbackConfigResponse:
        view = await configs.get_config(self._ctx, *parse_config_name(request.name))
        return pb.GetPostbackConfigResponse(postback_config=config_to_proto(view))

    async def ListPostbackConfigs(self, request: pb.ListPostbackConfigsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.ListPostbackConfigsResponse:
        game_id = translate.parse_game(request.parent)
        page_size = translate.page_size(request.page_size)
        views, next_token = await configs.list_configs(self._ctx, game_id, page_size, request.page_token)
        return pb.ListPostbackConfigsResponse(postback_configs=[config_to_proto(v) for v in views],
                                              next_page_token=next_token)

    async def UpdatePostbackConfig(self, request: pb.UpdatePostbackConfigRequest,
                                   context: grpc.aio.ServicerContext) -> pb.UpdatePostbackConfigResponse:
        game_id, config_id, changes = changes_from_proto(request)
        view = await configs.update_config(self._ctx, game_id, config_id, changes)
        return pb.UpdatePostbackConfigResponse(postback_config=config_to_proto(view))

    async def DeletePostbackConfig(self, request: pb.DeletePostbackConfigRequest,
                                   context: grpc.aio.ServicerContext) -> pb.DeletePostbackConfigResponse:
        cancelled = await configs.delete_config(self._ctx, *parse_config_name(request.name))
        return pb.DeletePostbackConfigResponse(cancelled_postback_count=cancelled)

    async def RotatePostbackCredentials(self, request: pb.RotatePostbackCredentialsRequest,
                                        context: grpc.aio.ServicerContext) -> pb.RotatePostbackCredentialsResponse:
        game_id, config_id = parse_config_name(request.name)
        violations = Violations()
        # The pixel's format is checked against the stored network by the service when a new pixel is given.
        credentials = _credentials(request.credentials, None, "credentials", violations, pixel_required=False)
        test_code = _test_code(request.test_code, violations)
        violations.raise_if_any()
        view = await configs.rotate_credentials(self._ctx, game_id, config_id, credentials.access_token,
                                                credentials.pixel_id or None, test_code)
        return pb.RotatePostbackCredentialsResponse(postback_config=config_to_proto(view))

    async def ValidatePostbackCredentials(self, request: pb.ValidatePostbackCredentialsRequest,
                                          context: grpc.aio.ServicerContext) -> pb.ValidatePostbackCredentialsResponse:
        game_id = translate.parse_game(request.parent)
        violations = Violations()
        config_id = network = credentials = None
        if request.postback_config:
            config_game, config_id = parse_config_name(request.postback_config, "postback_config")
            if config_game != game_id:
                violations.add("postback_config", "must be a config of the game named in parent")
        else:
            network = _network(request.network, "network", violations)
            credentials = _credentials(request.credentials, network, "credentials", violations)
        event_type = None
        if request.event_type:
            event_type = translate.EVENT_TYPE_FROM_PROTO.get(request.event_type)
            if event_type is None:
                violations.add("event_type", "must be a known conversion event type")
        test_code = _test_code(request.test_code, violations)
        violations.raise_if_any()
        check = await configs.validate_credentials(self._ctx, game_id, config_id, network, credentials, event_type,
                                                   test_code)
        return check_to_proto(check)

    async def RetryFailedPostbacks(self, request: pb.RetryFailedPostbacksRequest,
                                   context: grpc.aio.ServicerContext) -> pb.RetryFailedPostbacksResponse:
        report = await replay.retry_failed_postbacks(self._ctx, *replay_from_proto(request))
        return pb.RetryFailedPostbacksResponse(requeued_postback_count=report.requeued,
                                               window_closed_postback_count=report.window_closed)
