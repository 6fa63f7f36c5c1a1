"""PostgreSQL LISTEN/NOTIFY: one connection per process announces this process's commits and hears the other replicas'."""

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import URL

log = logging.getLogger("postbacks.notify")

# Committed postbacks that are due now (ingest, replay, a rotation releasing held ones, leases handed back).
POSTBACKS_DUE = "postbacks_due"
# Committed delivery-log rows, for the log streams of every replica.
DELIVERY_LOGS = "delivery_logs"
# Reconnecting after the connection is lost: the first wait, and the longest.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 10.0
# At most one announcement per channel this often: a dispatcher process woken by each of a busy API process's
# commits would claim a few postbacks at a time.
ANNOUNCE_INTERVAL_S = 0.01
# How often an idle connection is checked: a peer that vanished without closing the socket shows only on a write.
CHECK_S = 30.0


class Notifications:
    """Announcements are sent on the listening connection after the commit they announce, not in its transaction:
    the commit's own round trips stay as they were, and announcements made while one is on the wire go out as
    one. A listener in every replica is woken, the sender's own excepted (it wakes its listeners in-process).

    Notifications are a shortcut, never the only way work is found: while the connection is down (and for a poll
    after it is back) the callers' polls find what was committed meanwhile, and on reconnecting every listener is
    woken once."""

    def __init__(self, url: URL) -> None:
        # Connected as the engine connects (the same host, credentials and TLS options), less SQLAlchemy's own.
        _, connect_args = PGDialect_asyncpg().create_connect_args(url)
        accepted = inspect.signature(asyncpg.connect).parameters
        self._connect_args = {name: value for name, value in connect_args.items() if name in accepted}
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._pending: set[str] = set()
        self._to_send = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # how many times the listening connection was opened (tests, logs)

    @property
    def listening(self) -> bool:
        """Whether other replicas' announcements reach this process now."""
        return self._connection is not None and not self._connection.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The listening connection's server process, while it is open."""
        return self._connection.get_server_pid() if self.listening else None  # type: ignore[union-attr]

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Calls back (on the event loop) when another process announces on the channel; before start()."""
        self._listeners.setdefault(channel, []).append(callback)

    def announce(self, channel: str) -> None:
        """Called once a commit of this process is done: tells the other replicas, soon, without waiting."""
        self._pending.add(channel)
        self._to_send.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifications")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=1.0)
            self._connection = None

    async def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        while True:
            try:
                connection = await asyncpg.connect(**self._connect_args)
            except (OSError, asyncpg.PostgresError) as e:
                log.warning("cannot open the LISTEN connection (%s); polling meanwhile, trying again in %.1fs",
                            e, retry_s)
            else:
                try:
                    await self._serve(connection)
                except Exception as e:  # whatever broke it, the polls cover until it is back
                    log.warning("the LISTEN connection was lost (%s); polling meanwhile, reconnecting", e)
                    retry_s = RETRY_FIRST_S
                finally:
                    self._connection = None
                    connection.terminate()
            await asyncio.sleep(retry_s)  # backing off before reconnecting; not a synchronisation
            retry_s = min(RETRY_MAX_S, retry_s * 2)

    async def _serve(self, connection: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        own_pid = connection.get_server_pid()

        def heard(_connection: object, pid: int, channel: str, _payload: str) -> None:
            if pid != own_pid:
                self._call(channel)

        for channel in self._listeners:
            await connection.add_listener(channel, heard)
        self._connection = connection
        self.connections += 1
        if self.connections > 1:
            log.info("the LISTEN connection is back")
        # Whatever was announced while this process was not listening: each listener looks once.
        for channel in self._listeners:
            self._call(channel)
        while not lost.is_set():
            self._to_send.clear()
            if self._pending:
                channels, self._pending = sorted(self._pending), set()
                await connection.execute("".join(f"NOTIFY {channel};" for channel in channels))
                await asyncio.sleep(ANNOUNCE_INTERVAL_S)  # a pace, not a synchronisation: see ANNOUNCE_INTERVAL_S
                continue
            lost_wait = asyncio.ensure_future(lost.wait())
            send_wait = asyncio.ensure_future(self._to_send.wait())
            try:
                done, _ = await asyncio.wait((lost_wait, send_wait), timeout=CHECK_S,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost_wait.cancel()
                send_wait.cancel()
            if not done:
                await connection.execute("SELECT 1", timeout=CHECK_S)
        raise OSError("connection closed")

    def _call(self, channel: str) -> None:
        for callback in self._listeners.get(channel, ()):
            try:
                callback()
            except Exception:
                log.exception("a listener of %s failed", channel)
