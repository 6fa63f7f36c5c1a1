"""Command line: `python -m server` serves; `migrate` applies migrations; `keys` and `rotate-secret-key` administer."""

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import NoReturn

from server import dispatcher_process
from server import settings as settings_module
from server.api import translate
from server.app import App
from server.core.access import KeyKind
from server.delivery.network_client import NetworkClient
from server.errors import DomainError, StartupError
from server.secrets import (
    SecretBox,
    encode_keys,
    key_file,
    load_or_create_keys,
    new_secret_key,
    parse_keys,
    write_private_file,
)
from server.services import api_keys
from server.services.context import ServiceContext, wall_clock_us
from server.services.secret_keys import reseal_credentials
from server.store.db import Database

# mallopt's parameter for the size from which a block gets a mapping of its own (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 128 * 1024


def keep_large_blocks_apart() -> None:
    """Has every block of LARGE_BLOCK_BYTES or more (the buffers of a large request) mapped on its own and given
    back to the system when freed. glibc does so at first, but raises the threshold to the size of each such block
    freed, after which large requests' buffers come from the heap, where the small objects between them keep the
    freed space resident. No-op without glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)


async def serve(settings: settings_module.Settings) -> None:
    keep_large_blocks_apart()
    as_child = os.environ.get(dispatcher_process.CHILD_MARKER) == "1"
    dispatcher: dispatcher_process.DispatcherProcess | None = None
    if dispatcher_process.wanted(settings):
        dispatcher = dispatcher_process.DispatcherProcess(settings)
        app = App(settings.replace(role="api"))
        app.other_process_metrics = dispatcher.scrape
    else:
        app = App(settings)
    await app.start()
    if dispatcher is not None:
        try:
            await dispatcher.start()
        except BaseException:
            await app.stop(0)
            raise
    # What start-up allocated lives as long as the process: frozen, no later collection walks it again; and a higher
    # first threshold collects less often under load (unary ingest: 368 -> 321 us of main-thread CPU per event).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    graceful = [True]
    if as_child:
        orders = asyncio.create_task(dispatcher_process.serve_as_child(stop, app.ctx.metrics.exposition, graceful))
    else:
        http = f", HTTP (Connect, pixel) on port {app.http_port}" if app.http_port else ""
        print(f"postbacks: serving gRPC on port {app.port}{http}; Ctrl-C to stop", flush=True)
        if app.dev_key:
            print(f"postbacks: development mode; full-access key (kept in {settings.dev_key_file}): {app.dev_key}",
                  flush=True)
    await stop.wait()
    logging.getLogger("postbacks").info("shutting down (grace %.0fs)", settings.shutdown_grace_s if graceful[0] else 0)
    await asyncio.gather(app.stop(None if graceful[0] else 0),
                         dispatcher.stop() if dispatcher is not None else asyncio.sleep(0))
    if as_child:
        orders.cancel()


async def migrate(settings: settings_module.Settings) -> None:
    db = Database(settings.resolved_database_url)
    await db.migrate()
    await db.close()
    print("postbacks: database is at the newest schema")


@contextlib.asynccontextmanager
async def _offline_context(settings: settings_module.Settings, secrets: SecretBox) -> AsyncIterator[ServiceContext]:
    """What a one-off command needs to run use cases on the database; it talks to no network."""
    db = Database(settings.resolved_database_url)
    await db.migrate()
    try:
        yield ServiceContext(settings=settings, db=db, secrets=secrets,
                             credential_checker=NetworkClient(settings, wall_clock_us))
    finally:
        await db.close()


def _time(us: int | None) -> str:
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if us else "-"


async def keys(settings: settings_module.Settings, args: argparse.Namespace) -> None:
    """`keys create --kind ingest --game G`, `keys create --kind admin [--game G ...]`,
    `keys create --kind publishable --game G --origin https://www.mygame.com [--origin ...]`, `keys list`,
    `keys revoke ID`."""
    # These commands seal nothing: a throwaway key keeps them from creating or needing the secret key file.
    async with _offline_context(settings, SecretBox([new_secret_key()])) as ctx:
        if args.action == "create":
            games = [translate.parse_game(f"games/{g}", "--game") for g in args.game]
            key, view = await api_keys.create_key(ctx, KeyKind(args.kind), games, args.label, args.origin)
            scope = ", ".join(f"games/{g}" for g in view.games) or "every game"
            if view.origins:
                scope += f", from {', '.join(view.origins)}"
            print(key)
            print(f"postbacks: created {view.kind} key {view.key_id} for {scope}. This is the only time the key is "
                  "shown: the service keeps only its hash.", file=sys.stderr)
        elif args.action == "list":
            print(f"{'ID':<10}{'KIND':<13}{'CREATED':<22}{'REVOKED':<22}{'GAMES':<24}LABEL")
            for view in await api_keys.list_keys(ctx):
                origins = f" (origins: {' '.join(view.origins)})" if view.origins else ""
                print(f"{view.key_id:<10}{view.kind:<13}{_time(view.create_time_us):<22}"
                      f"{_time(view.revoke_time_us):<22}{','.join(view.games) or '*':<24}{view.label}{origins}")
        else:
            view = await api_keys.revoke_key(ctx, args.key_id)
            print(f"postbacks: key {view.key_id} is revoked; servers refuse it within "
                  f"{settings.api_key_cache_s:g}s")


async def rotate_secret_key(settings: settings_module.Settings) -> None:
    """Re-encrypts every stored credential with a new key (key file) or the first key of secret_keys (setting)."""
    if settings.secret_keys:
        async with _offline_context(settings, SecretBox(parse_keys(settings.secret_keys))) as ctx:
            report = await reseal_credentials(ctx)
        print(f"postbacks: re-sealed {report.resealed} of {report.total} stored credentials with the first key of "
              "secret_keys; once every server runs with that key first, drop the other keys from the setting")
        return
    path = key_file(settings.data_dir)
    old_keys = load_or_create_keys("", settings.data_dir)
    new_keys = [new_secret_key(), *old_keys]
    # From here on every server (they re-read the key file) opens both and seals with the new key.
    write_private_file(path, encode_keys(new_keys))
    resealed = 0
    async with _offline_context(settings, SecretBox(new_keys)) as ctx:
        # Repeat until a pass finds nothing: a server may have sealed with the old key just before the file changed.
        while resealed_now := (await reseal_credentials(ctx)).resealed:
            resealed += resealed_now
    write_private_file(path, encode_keys(new_keys[:1]))
    print(f"postbacks: new secret key in {path}; re-sealed {resealed} stored credentials; the old key is retired")


class _Parser(argparse.ArgumentParser):
    """Refuses a bad command line in one line, as every other start-up error is refused."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"postbacks: {message} (python -m server --help lists the settings)\n")


def _one_line(error: BaseException) -> str:
    """What went wrong, in one line: the known kinds say it themselves, anything else names its type too."""
    if isinstance(error, DomainError | StartupError):
        text = error.message if isinstance(error, DomainError) else str(error)
    else:
        text = f"{type(error).__name__}: {error} (--log-level DEBUG shows where)"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m server", description="Conversion postback service.")
    parser.add_argument("command", nargs="?", default="serve",
                        choices=("serve", "migrate", "keys", "rotate-secret-key"))
    parser.add_argument("action", nargs="?", choices=("create", "list", "revoke"), help="keys: what to do")
    parser.add_argument("key_id", nargs="?", help="keys revoke: the key's id, as `keys list` shows it")
    parser.add_argument("--kind", choices=(KeyKind.INGEST.value, KeyKind.ADMIN.value, KeyKind.PUBLISHABLE.value),
                        help="keys create: ingest (events of one game), admin (configs, logs, erasure, settings) or "
                             "publishable (public: clicks, identifies and launches of one game from its --origin "
                             "pages and game clients, over HTTP)")
    parser.add_argument("--game", action="append", default=[],
                        help="keys create: a game the key is for; once for an ingest key, any number for an admin "
                             "key (none: every game)")
    parser.add_argument("--origin", action="append", default=[],
                        help="keys create --kind publishable: a web origin whose pages may use the key, such as "
                             "https://www.mygame.com; repeat for each")
    parser.add_argument("--label", default="", help="keys create: a note shown by `keys list`")
    settings_module.add_arguments(parser)
    args = parser.parse_args(argv)
    if (args.command == "keys") != (args.action is not None):
        parser.error("`keys` takes one of create, list, revoke; other commands take no action")
    if args.action == "create" and not args.kind:
        parser.error("keys create needs --kind ingest, --kind admin or --kind publishable")
    if args.kind in (KeyKind.INGEST.value, KeyKind.PUBLISHABLE.value) and len(args.game) != 1:
        parser.error(f"{'an' if args.kind == KeyKind.INGEST.value else 'a'} {args.kind} key is for exactly one game: "
                     "give one --game")
    if (args.action == "revoke") != (args.key_id is not None):
        parser.error("keys revoke takes exactly one key id")
    settings = settings_module.from_namespace(args)
    process = " (dispatcher process)" if os.environ.get(dispatcher_process.CHILD_MARKER) == "1" else ""
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{process}: %(message)s")
    if args.command != "serve" or process:
        # A one-off command prints its result, and the parent of a dispatcher process has migrated: Alembic's lines
        # about the migration check they run first add nothing.
        logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    commands = {"serve": serve, "migrate": migrate, "rotate-secret-key": rotate_secret_key,
                "keys": lambda s: keys(s, args)}
    command = commands[args.command]
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(command(settings))
        else:
            uvloop.run(command(settings))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # every failure, expected or not, ends in one line and a non-zero exit
        logging.getLogger("postbacks").debug("%s failed", args.command, exc_info=True)
        sys.exit(f"postbacks: {_one_line(e)}")


if __name__ == "__main__":
    main()
