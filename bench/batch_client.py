"""Sends pre-serialized BatchIngestEvents requests from a file with a few concurrent callers; prints events/s."""

import argparse
import asyncio
import json
import pathlib
import time

import grpc

from bench.workload import read_batches
from postbacks.v1 import event_service_pb2

METHOD = "/postbacks.v1.EventService/BatchIngestEvents"
# A batch is idempotent on its event ids, so a real sender retries these; the benchmark counts each one.
RETRIED = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED)
ATTEMPTS = 5


async def send_all(port: int, key: str, batches: list[bytes], concurrency: int, max_seconds: float,
                   interleaved: bool = False) -> dict:  # type: ignore[type-arg]
    """Sends the batches in file order; callers stop taking new ones after max_seconds, so the batches sent are
    always the first `calls` of the file. Interleaved, caller i sends batches i, i + concurrency, ... in turn (the
    file holds one stream per caller, as workload.interleave writes it) and `calls_per_caller` says how far each
    got."""
    # Requests go out as the bytes in the file: the client spends nothing on building or serializing them.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)]) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        metadata = (("authorization", f"Bearer {key}"),)
        queues = ([list(reversed(batches[i::concurrency])) for i in range(concurrency)] if interleaved
                  else [list(reversed(batches))] * concurrency)
        calls_per_caller = [0] * concurrency
        acknowledged = duplicates = 0
        errors: list[str] = []
        deadline = time.perf_counter() + max_seconds

        async def attempt(request: bytes) -> bytes:
            for tries in range(1, ATTEMPTS + 1):
                try:
                    return await call(request, metadata=metadata, timeout=120)  # type: ignore[no-any-return]
                except grpc.aio.AioRpcError as e:
                    errors.append(f"{e.code().name}: {e.details()}")
                    if e.code() not in RETRIED or tries == ATTEMPTS:
                        raise
                    await asyncio.sleep(0.5 * tries)
            raise AssertionError("unreachable")

        async def caller(number: int) -> None:
            nonlocal acknowledged, duplicates
            pending = queues[number]
            while pending and time.perf_counter() < deadline:
                request = pending.pop()
                calls_per_caller[number] += 1
                reply = event_service_pb2.BatchIngestEventsResponse.FromString(await attempt(request))
                acknowledged += len(reply.results)
                duplicates += sum(1 for r in reply.results if r.duplicate)

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    # Only new events count: a retried batch that had committed comes back as duplicates.
    return {"events": acknowledged, "duplicates": duplicates, "seconds": round(seconds, 3),
            "per_second": round((acknowledged - duplicates) / seconds, 1), "concurrency": concurrency, "calls": sum(calls_per_caller),
            "calls_per_caller": calls_per_caller if interleaved else None, "stopped_early": any(queues), "errors": len(errors), "first_error": errors[0] if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True, help="API key sent as authorization: Bearer")
    parser.add_argument("--batches", type=pathlib.Path, required=True, help="file written by workload.write_batches")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop sending new batches after this")
    parser.add_argument("--interleaved", action="store_true",
                        help="caller i sends batches i, i + concurrency, ...: one stream of the file per caller")
    args = parser.parse_args()
    result = asyncio.run(send_all(args.port, args.key, read_batches(args.batches), args.concurrency, args.max_seconds,
                                  args.interleaved))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
