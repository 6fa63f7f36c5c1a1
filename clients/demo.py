"""`make demo`: one postback end to end, from an ad click to the fake TikTok network, with a retry on the way."""

import asyncio
import json
import pathlib
import re
import sys
import tempfile

import grpc

from clients.postbacks_client import PostbacksClient, ad_click, game_launch, identify, purchase
from postbacks.v1 import (
    conversion_pb2,
    delivery_log_pb2,
    delivery_log_service_pb2,
    delivery_log_service_pb2_grpc,
    network_pb2,
    postback_config_pb2,
    postback_config_service_pb2,
    postback_config_service_pb2_grpc,
)
from tests.fakes.fake_network import FakeAdNetwork, Reply

GAME = "demo-game"
SETTLED = {"POSTBACK_STATE_SUCCEEDED", "POSTBACK_STATE_FAILED", "POSTBACK_STATE_CANCELLED"}


async def start_service(data_dir: pathlib.Path, fake: FakeAdNetwork) -> tuple[asyncio.subprocess.Process, int, str]:
    """The real server process on a free port, pointed at the fake network, in development mode."""
    key_file = data_dir / "dev.key"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", str(data_dir),
        "--tiktok-base-url", fake.tiktok_base_url, "--reddit-base-url", fake.reddit_base_url,
        "--dev-key-file", str(key_file), "--retry-base-delay-s", "1", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    while line := (await process.stdout.readline()).decode():
        if match := re.search(r"serving gRPC on port (\d+)", line):
            await process.stdout.readline()  # the development-mode notice; the key itself is read from its file
            return process, int(match.group(1)), key_file.read_text().strip()
    raise RuntimeError("the service exited before serving")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="postbacks-demo-") as tmp:
        async with FakeAdNetwork() as fake:
            process, port, key = await start_service(pathlib.Path(tmp), fake)
            try:
                await run_journey(fake, f"127.0.0.1:{port}", key)
            finally:
                process.terminate()
                await process.wait()


async def run_journey(fake: FakeAdNetwork, target: str, key: str) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(target) as channel, PostbacksClient(target, api_key=key) as client:
        configs = postback_config_service_pb2_grpc.PostbackConfigServiceStub(channel)
        created = await configs.CreatePostbackConfig(postback_config_service_pb2.CreatePostbackConfigRequest(
            parent=f"games/{GAME}", postback_config_id="tiktok-main", postback_config=postback_config_pb2.PostbackConfig(
                display_name="TikTok main pixel", network=network_pb2.NETWORK_TIKTOK,
                credentials=postback_config_pb2.PostbackCredentials(access_token="demo-token-1234", pixel_id="CDEMO01"),
                trigger_events=[network_pb2.CONVERSION_EVENT_TYPE_GAME_LAUNCH,
                                network_pb2.CONVERSION_EVENT_TYPE_PURCHASE])), metadata=metadata)
        print(f"created {created.postback_config.name} (token hint {created.postback_config.access_token_hint})")
        fake.script("tiktok", [Reply.http(503)])  # the network stumbles once, so the log shows a retry

        await client.ingest(GAME, ad_click("click-1", anonymous_id="visitor-7", ip_address="203.0.113.7",
                                           landing_url="https://play.example/?ttclid=E.C.P.demo-click"))
        await client.ingest(GAME, identify("identify-1", user_id="player-42", anonymous_id="visitor-7",
                                           email="Player@Example.com"))
        await client.ingest(GAME, game_launch("launch-1", user_id="player-42"))
        await client.ingest(GAME, purchase("purchase-1", user_id="player-42", value="9.99", currency="USD"))

        conversions = {}
        for _ in range(300):  # the retry comes about a second later; give up after 30 s
            conversions = {e: await client.get_conversion(GAME, e) for e in ("launch-1", "purchase-1")}
            states = [conversion_pb2.PostbackState.Name(p.state) for c in conversions.values() for p in c.postbacks]
            if states and set(states) <= SETTLED:
                break
            await asyncio.sleep(0.1)

        print("\n== what the fake TikTok network received ==")
        for request in fake.received("tiktok"):
            kind = "credential check at save time" if "credential-check" in request.json["data"][0]["event_id"] \
                else "postback"
            print(f"POST {request.path}  Access-Token: ********  ({kind})")
            print(json.dumps(request.json, indent=2))
        logs = await delivery_log_service_pb2_grpc.DeliveryLogServiceStub(channel).ListDeliveryLogs(
            delivery_log_service_pb2.ListDeliveryLogsRequest(parent=f"games/{GAME}"), metadata=metadata)
        print("\n== delivery log (newest first) ==")
        for entry in logs.delivery_logs:
            status = delivery_log_pb2.DeliveryAttemptStatus.Name(entry.status).removeprefix("DELIVERY_ATTEMPT_STATUS_")
            print(f"{entry.attempt_time.ToJsonString()}  {entry.conversion}  attempt {entry.attempt_number}  "
                  f"{status}  HTTP {entry.http_status}  {entry.latency_ms} ms  "
                  f"{' '.join(filter(None, [entry.network_code, entry.network_message]))}")
        print("\n== conversions ==")
        for conversion in conversions.values():
            decision = conversion_pb2.ConversionDecision.Name(conversion.decision).removeprefix("CONVERSION_DECISION_")
            postbacks = ", ".join(f"{p.postback_config}: {conversion_pb2.PostbackState.Name(p.state)} after "
                                  f"{p.attempt_count} attempt(s)" for p in conversion.postbacks)
            print(f"{conversion.name}  {decision}  click {conversion.attributed_click.click_id}  {postbacks}")


if __name__ == "__main__":
    asyncio.run(main())
