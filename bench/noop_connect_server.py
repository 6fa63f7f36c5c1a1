"""The HTTP ceiling: the Connect EventService whose IngestEvent answers at once, served by the same uvicorn setup
and event loop as the real server's HTTP API."""

import asyncio
import signal

from postbacks.v1 import event_service_connect, event_service_pb2
from server.web import connect as _codecs  # noqa: F401  (the real server's JSON codecs, so only the handler differs)
from server.web.server import HttpServer


class NoopEventService(event_service_connect.EventService):
    async def ingest_event(self, request, ctx):  # type: ignore[no-untyped-def]
        return event_service_pb2.IngestEventResponse()


async def serve() -> None:
    application = event_service_connect.EventServiceASGIApplication(NoopEventService(), compressions=())
    server = HttpServer(application, "127.0.0.1:0", shutdown_grace_s=1.0)  # type: ignore[arg-type]
    port = await server.start()
    print(f"noop-connect: serving gRPC on port 0, HTTP (Connect, pixel) on port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
