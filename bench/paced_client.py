"""An open-loop client: one purchase per clicked player at a fixed rate, stamping each send with CLOCK_MONOTONIC."""

import argparse
import asyncio
import json
import pathlib
import time

import grpc

from bench.workload import PARENT, purchase
from postbacks.v1 import event_service_pb2

METHOD = "/postbacks.v1.EventService/IngestEvent"


async def run(port: int, key: str, rate: float, seconds: float, players: int) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Returns (summary, per-event times)."""
    count = int(rate * seconds)
    now_us = int(time.time() * 1e6)
    # Built before the clock starts, so the pace is set by the schedule and not by protobuf work.
    requests = [event_service_pb2.IngestEventRequest(parent=PARENT, event=purchase(i % players, now_us, 100 + i))
                .SerializeToString() for i in range(count)]
    event_ids = [f"p-{i % players}-{100 + i}" for i in range(count)]
    sent_at = [0.0] * count
    acked_at = [0.0] * count
    failed: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {key}"),)
        await channel.channel_ready()

        async def send(i: int) -> None:
            sent_at[i] = time.monotonic()
            try:
                await call(requests[i], metadata=metadata, timeout=30)
                acked_at[i] = time.monotonic()
            except grpc.aio.AioRpcError as e:
                failed.append(f"{e.code().name}: {e.details()}")

        tasks = set()
        start = time.monotonic()
        # Open loop: request i goes out at start + i/rate whether or not earlier ones were answered.
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    lag = sorted(sent_at[i] - (start + i / rate) for i in range(count))
    times = {"event_ids": event_ids, "sent_at": sent_at, "acked_at": acked_at}
    return {"sent": count, "failed": len(failed), "first_failure": failed[0] if failed else "",
            "seconds": round(elapsed, 3), "achieved_rate": round(count / (sent_at[-1] - start + 1 / rate), 1),
            "send_lag_p99_ms": round(1000 * lag[int(0.99 * (count - 1))], 2)}, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="conversions per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--players", type=int, required=True, help="players 0..N-1 have a prior TikTok click")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="JSON file for per-event send times")
    args = parser.parse_args()
    client = run(args.port, args.key, args.rate, args.seconds, args.players)
    try:
        import uvloop

        result, times = uvloop.run(client)
    except ImportError:
        result, times = asyncio.run(client)
    args.out.write_text(json.dumps(times))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
