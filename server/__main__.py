"""Command line: `python -m server` serves; `python -m server migrate` only applies migrations."""

import argparse
import asyncio
import logging
import signal
import sys

from server import settings as settings_module
from server.app import App
from server.store.db import Database


async def serve(settings: settings_module.Settings) -> None:
    app = App(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"postbacks: serving gRPC on port {app.port}; Ctrl-C to stop", flush=True)
    await stop.wait()
    logging.getLogger("postbacks").info("shutting down (grace %.0fs)", settings.shutdown_grace_s)
    await app.stop()


async def migrate(settings: settings_module.Settings) -> None:
    db = Database(settings.resolved_database_url)
    await db.migrate()
    await db.close()
    print("postbacks: database is at the newest schema")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="postbacks-server", description="Conversion postback service.")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "migrate"))
    settings_module.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_module.from_namespace(args)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = {"serve": serve, "migrate": migrate}[args.command]
    try:
        import uvloop

        uvloop.run(command(settings))
    except ImportError:
        asyncio.run(command(settings))


if __name__ == "__main__":
    main()
