"""The default deployment's dispatcher in a child process: started, watched, restarted and stopped by the API process."""

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable

from server.errors import StartupError
from server.settings import Settings, env_name

log = logging.getLogger("postbacks.dispatcher_process")

# Set in the child's environment: it then takes orders on stdin (see serve_as_child) and prints no banner.
CHILD_MARKER = "_POSTBACKS_DISPATCHER_CHILD"
# The child's orders, one a line, and its answer to SCRAPE: a line with the byte count, then that many bytes. It says
# READY once it runs, before any answer.
SCRAPE, STOP, READY = b"scrape\n", b"stop\n", b"ready\n"
_RESTART_DELAYS_S = (1.0, 2.0, 5.0, 15.0, 30.0)
_SCRAPE_TIMEOUT_S = 5.0
_START_TIMEOUT_S = 60.0
_STEADY_S = 60.0  # a child that ran this long before it died is restarted after the shortest delay again


def wanted(settings: Settings) -> bool:
    """Whether `--role all` runs its dispatcher in a child process: asked for, or `auto` with more than one CPU
    to run on (one interpreter for both took turns on one lock: see docs/performance.md)."""
    if settings.role != "all" or settings.dispatcher_process == "off":
        return False
    return settings.dispatcher_process == "on" or len(os.sched_getaffinity(0)) > 1


def child_settings(settings: Settings) -> Settings:
    """The parent's settings for a dispatcher: no public listener, no metrics port and no development key of its
    own (the parent serves those), health on a port of its own choosing."""
    return settings.replace(role="dispatcher", listen="127.0.0.1:0", http_listen="", metrics_listen="",
                            dev_key_file="", dispatcher_process="off")


def child_environment(settings: Settings) -> dict[str, str]:
    """The settings as POSTBACKS_* variables (not flags: a secret key in a command line is visible to every user)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("POSTBACKS_")}
    for f in dataclasses.fields(Settings):
        env[env_name(f.name)] = str(getattr(settings, f.name))
    return {**env, CHILD_MARKER: "1"}


class DispatcherProcess:
    """The child `python -m server --role dispatcher` of a `--role all` process. It follows orders on its stdin:
    the parent's death closes that pipe, and the child then stops at once, so it never outlives the service.
    A child that exits on its own is logged and started again, after a delay that grows while it keeps failing."""

    def __init__(self, settings: Settings) -> None:
        self._env = child_environment(child_settings(settings))
        self._grace_s = settings.shutdown_grace_s
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._scrape_lock = asyncio.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.returncode is None else None

    async def start(self) -> None:
        """Returns once the child dispatches; a child that cannot start fails the start-up with its exit code."""
        if not await self._spawn():
            assert self._process is not None
            raise StartupError(f"the dispatcher process exited with code {self._process.returncode} as it started "
                               "(its log is above); --dispatcher-process off runs the dispatcher in this process")
        self._watch = asyncio.create_task(self._keep_running(), name="dispatcher process")

    async def _spawn(self) -> bool:
        """Starts a child and waits until it says it runs: False if it exits (or hangs) first."""
        # A session of its own: Ctrl-C in a terminal reaches the parent, which stops the child in order.
        process = self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=self._env, start_new_session=True)
        self.starts += 1
        assert process.stdout is not None
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                ready = await process.stdout.readline() == READY
        except TimeoutError:
            ready = False
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return False
        log.info("dispatcher process %d runs", process.pid)
        return True

    async def _keep_running(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            if loop.time() - started > _STEADY_S:
                failures = 0
            delay_s = _RESTART_DELAYS_S[min(failures, len(_RESTART_DELAYS_S) - 1)]
            failures += 1
            log.error("the dispatcher process exited with code %s; postbacks wait in the outbox until another "
                      "starts in %.0fs", code, delay_s)
            await asyncio.sleep(delay_s)
            if not self._stopping:
                started = loop.time()
                await self._spawn()

    async def scrape(self) -> bytes:
        """The child's metrics, in the Prometheus text format; empty when it does not answer."""
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None or process.stdout is None:
            return b""
        try:
            async with self._scrape_lock, asyncio.timeout(_SCRAPE_TIMEOUT_S):
                process.stdin.write(SCRAPE)
                await process.stdin.drain()
                size = int(await process.stdout.readline())
                return await process.stdout.readexactly(size)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            log.warning("the dispatcher process did not answer a metrics scrape; serving this process's alone")
            return b""

    async def stop(self) -> None:
        """Asks the child to stop (it lets its sends finish within the shutdown grace), then kills it if it has not."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.write(STOP)
            await process.stdin.drain()
            process.stdin.close()
        try:
            async with asyncio.timeout(self._grace_s + 10):
                await process.wait()
        except TimeoutError:
            log.error("the dispatcher process did not stop within the grace; killing it")
            process.kill()
            await process.wait()


async def serve_as_child(stop: asyncio.Event, exposition: Callable[[], bytes], graceful: list[bool]) -> None:
    """The child's side: answers scrapes on stdout; STOP ends it gracefully, the pipe closing (the parent died)
    ends it at once (graceful[0] set to False)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    out.write(READY)
    out.flush()
    while True:
        order = await reader.readline()
        if order == SCRAPE:
            body = exposition()
            out.write(b"%d\n" % len(body) + body)
            out.flush()
        elif order == STOP or not order:
            graceful[0] = order == STOP
            stop.set()
            return
