"""An on-call engineer tails delivery logs with the real grpcurl binary while a real delivery happens."""

import asyncio
import json
from typing import Any

from postbacks.v1 import network_pb2
from tests.conftest import wait_until
from tests.helpers import GRPCURL, click, create_config, grpcurl, ingest, launch

GAME = "tail-game"
STREAM = "postbacks.v1.DeliveryLogService/StreamDeliveryLogs"
LIST = "postbacks.v1.DeliveryLogService/ListDeliveryLogs"
# Deadline for one line of grpcurl output: a hang fails the test instead of blocking the run.
LINE_DEADLINE_S = 20


class GrpcurlMessages:
    """Reads grpcurl's stdout as it arrives: each message is a JSON object whose closing brace starts a line."""

    def __init__(self, stdout: asyncio.StreamReader):
        self._stdout = stdout

    async def next(self) -> dict[str, Any]:
        lines = []
        while True:
            line = (await asyncio.wait_for(self._stdout.readline(), LINE_DEADLINE_S)).decode()
            assert line, f"grpcurl ended its output mid-stream after {''.join(lines)!r}"
            lines.append(line)
            if line.rstrip("\n") == "}":
                return json.loads("".join(lines))  # type: ignore[no-any-return]

    async def next_entry(self) -> dict[str, Any]:
        """The next message carrying an entry; heartbeats (a resume token alone) are skipped."""
        while "delivery_log" not in (message := await self.next()):
            assert set(message) == {"resume_token"}
        return message


async def start_grpcurl(port: int, key: str, request: dict[str, Any], *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", "-H", f"authorization: Bearer {key}", *flags, "-d", json.dumps(request),
        f"127.0.0.1:{port}", STREAM, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def deliver_one_launch(channel, suffix: str) -> str:  # type: ignore[no-untyped-def]
    """A paid TikTok click then the player's first launch: one postback the dispatcher sends to the fake network."""
    await ingest(channel, GAME, click(f"click-{suffix}", anonymous_id=f"anon-{suffix}",
                                      network=network_pb2.NETWORK_TIKTOK, click_id=f"TT-{suffix}"))
    await ingest(channel, GAME, launch(f"launch-{suffix}", anonymous_id=f"anon-{suffix}"))
    return f"games/{GAME}/conversions/launch-{suffix}"


async def test_grpcurl_sees_a_real_delivery_arrive_live_and_ending_it_ends_the_server_stream(app, channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, GAME, network=network_pb2.NETWORK_TIKTOK, config_id="tiktok-main")
    process = await start_grpcurl(app.port, app.dev_key, {"parent": f"games/{GAME}"}, "-max-time", "300")
    assert process.stdout is not None
    try:
        messages = GrpcurlMessages(process.stdout)
        live = await messages.next()
        assert set(live) == {"resume_token"}, "the first message says the stream is live (no backlog asked for)"
        assert app.open_log_streams == 1

        conversion = await deliver_one_launch(channel, "1")
        message = await messages.next_entry()
        entry = message["delivery_log"]
        assert entry["conversion"] == conversion
        assert entry["postback_config"] == config.name
        assert entry["name"].startswith(f"{config.name}/deliveryLogs/")
        assert entry["network"] == "NETWORK_TIKTOK"
        assert entry["event_type"] == "CONVERSION_EVENT_TYPE_GAME_LAUNCH"
        assert entry["status"] == "DELIVERY_ATTEMPT_STATUS_SUCCESS"
        assert entry["http_status"] == 200 and entry["attempt_number"] == 1
        assert message["resume_token"]
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
    await wait_until(lambda: app.open_log_streams == 0)


async def test_readme_recipes_list_with_filters_and_tail_with_max_time(app, channel) -> None:  # type: ignore[no-untyped-def]
    config = await create_config(channel, GAME, network=network_pb2.NETWORK_TIKTOK, config_id="tiktok-main")
    conversion = await deliver_one_launch(channel, "2")

    # List: one config, the last 24 hours, successes and failures of launches, 20 per page.
    async def listed() -> list[dict[str, Any]]:
        code, out, err = await grpcurl(app.port, LIST, data={
            "parent": config.name, "time_range": "TIME_RANGE_PRESET_LAST_24_HOURS",
            "statuses": ["DELIVERY_ATTEMPT_STATUS_SUCCESS", "DELIVERY_ATTEMPT_STATUS_FAILED"],
            "event_types": ["CONVERSION_EVENT_TYPE_GAME_LAUNCH"], "page_size": 20})
        assert code == 0, err
        return json.loads(out).get("delivery_logs", [])  # type: ignore[no-any-return]

    [entry] = await wait_until(listed)
    assert entry["conversion"] == conversion and entry["status"] == "DELIVERY_ATTEMPT_STATUS_SUCCESS"

    # Tail: the last hour's backlog, then live, for at most 5 seconds.
    process = await start_grpcurl(app.port, app.dev_key, {"parent": f"games/{GAME}",
                                                         "time_range": "TIME_RANGE_PRESET_LAST_HOUR"},
                                  "-max-time", "5")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert "DeadlineExceeded" in stderr.decode(), "-max-time ends the tail"
    assert f'"conversion": "{conversion}"' in stdout.decode()
    await wait_until(lambda: app.open_log_streams == 0)
