"""The unary ceiling: a grpc.aio server whose IngestEvent answers at once, on the event loop the real server uses."""

import argparse
import asyncio
import signal

import grpc

from postbacks.v1 import event_service_pb2, event_service_pb2_grpc
from server.settings import Settings


class NoopEventServicer(event_service_pb2_grpc.EventServiceServicer):
    async def IngestEvent(self, request, context):  # type: ignore[no-untyped-def]
        return event_service_pb2.IngestEventResponse()


async def serve(listen: str) -> None:
    # The same server options as the real server, so only the handler differs.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", Settings().max_receive_message_bytes)])
    event_service_pb2_grpc.add_EventServiceServicer_to_server(NoopEventServicer(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"noop: serving gRPC on port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    # Mirrors server/__main__.py: uvloop when it is installed.
    try:
        import uvloop

        uvloop.run(serve(args.listen))
    except ImportError:
        asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
