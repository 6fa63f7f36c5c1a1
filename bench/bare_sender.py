"""The delivery ceiling: a bare aiohttp client posting TikTok batches shaped like the dispatcher's to the fake."""

import argparse
import asyncio
import copy
import json
import pathlib
import time

import aiohttp

from bench.fake import TOKEN


def bodies_like(sample: bytes, postbacks: int, batch_size: int) -> list[bytes]:
    """Copies of one real dispatcher request, each event given a new dedup id, `batch_size` events a body."""
    payload = json.loads(sample)
    shapes = payload["data"]
    bodies = []
    for start in range(0, postbacks, batch_size):
        events = []
        for i in range(start, min(start + batch_size, postbacks)):
            event = copy.deepcopy(shapes[i % len(shapes)])
            event["event_id"] = f"bare-{i}"
            events.append(event)
        bodies.append(json.dumps({**payload, "data": events}, separators=(",", ":")).encode())
    return bodies


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> dict:  # type: ignore[type-arg]
    headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
    pending = list(reversed(bodies))
    failures = 0
    async with aiohttp.ClientSession() as session:

        async def sender() -> None:
            nonlocal failures
            while pending:
                body = pending.pop()
                async with session.post(url, data=body, headers=headers) as response:
                    reply = await response.json()
                    failures += response.status != 200 or reply.get("code") != 0

        started_monotonic = time.monotonic()
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"requests": len(bodies), "failures": failures, "seconds": round(seconds, 3),
            "started_monotonic": started_monotonic, "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the fake's TikTok track URL")
    parser.add_argument("--sample", type=pathlib.Path, required=True, help="one request body the dispatcher sent")
    parser.add_argument("--postbacks", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    bodies = bodies_like(args.sample.read_bytes(), args.postbacks, args.batch_size)
    print(json.dumps(asyncio.run(send_all(args.url, bodies, args.concurrency))), flush=True)


if __name__ == "__main__":
    main()
