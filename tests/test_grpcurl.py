"""What an engineer sees with the real grpcurl binary: reflection, health, ingest, duplicates and clear errors."""

import json

from tests.helpers import grpcurl, rfc3339

SERVICES = {
    "postbacks.v1.EventService",
    "postbacks.v1.PostbackConfigService",
    "postbacks.v1.DeliveryLogService",
    "postbacks.v1.PrivacyService",
    "postbacks.v1.GameSettingsService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def test_list_shows_services_health_and_reflection(app) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await grpcurl(app.port, "list")
    assert code == 0, err
    assert SERVICES <= set(out.split())


async def test_health_check_reports_serving(app) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await grpcurl(app.port, "grpc.health.v1.Health/Check", data={})
    assert code == 0, err
    assert json.loads(out)["status"] == "SERVING"


async def test_ingest_then_duplicate_then_bad_currency(app) -> None:  # type: ignore[no-untyped-def]
    event = {"eventId": "launch-1", "eventTime": rfc3339(5), "userId": "player-42", "gameLaunch": {}}
    request = {"parent": "games/demo", "event": event}

    code, out, err = await grpcurl(app.port, "postbacks.v1.EventService/IngestEvent", data=request)
    assert code == 0, err
    first = json.loads(out)["result"]
    assert first["name"] == "games/demo/events/launch-1"
    assert "duplicate" not in first
    assert first["conversion"]["decision"] == "CONVERSION_DECISION_NO_POSTBACK"
    assert first["conversion"]["no_postback_reason"] == "NO_POSTBACK_REASON_ORGANIC"

    code, out, err = await grpcurl(app.port, "postbacks.v1.EventService/IngestEvent", data=request)
    assert code == 0, err
    again = json.loads(out)["result"]
    assert again["duplicate"] is True
    assert "payload_mismatch" not in again

    bad = {"parent": "games/demo", "event": {
        "eventId": "buy-1", "eventTime": rfc3339(5), "userId": "player-42",
        "purchase": {"value": "9.99", "currency": "DOLLARS"}}}
    code, out, err = await grpcurl(app.port, "postbacks.v1.EventService/IngestEvent", data=bad)
    assert code != 0
    assert "InvalidArgument" in err
    assert "event.purchase.currency" in err
