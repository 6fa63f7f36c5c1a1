"""Child processes of a benchmark: the real server, helper clients, fresh databases, memory and profiles."""

import asyncio
import contextlib
import json
import os
import pathlib
import re
import secrets
import shlex
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.engine import make_url

PYTHON = sys.executable
ROOT = pathlib.Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving gRPC on port (\d+)")
_SERVING_HTTP = re.compile(r"HTTP \(Connect, pixel\) on port (\d+)")


def display_command(argv: Sequence[str]) -> str:
    """A command line as a person would type it from the repository root."""
    shown = [".venv/bin/python" if a == PYTHON else a for a in argv]
    return shlex.join(shown)


class ServerProcess:
    """A gRPC server in its own process (the real one, or the no-op ceiling); `start()` returns once it prints
    "serving gRPC on port N" (and, for the real one, has written its development key)."""

    def __init__(self, argv: Sequence[str], log_path: pathlib.Path, key_file: pathlib.Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.key_file = key_file
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.http_port = 0  # the HTTP API's, when it serves one
        self.key = ""
        self.ready_at = 0.0  # time.monotonic() when it said it serves

    @classmethod
    def postbacks(cls, data_dir: pathlib.Path, database_url: str, *, role: str, tiktok_base_url: str = "",
                  extra_args: Sequence[str] = (), module: str = "server",
                  env: dict[str, str] | None = None) -> "ServerProcess":
        """`python -m server` on a free port of 127.0.0.1, in development mode for its full-access key."""
        data_dir.mkdir(parents=True, exist_ok=True)
        key_file = data_dir / "dev.key"
        argv = [PYTHON, "-m", module, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                "--data-dir", str(data_dir),
                "--database-url", database_url, "--dev-key-file", str(key_file), "--role", role]
        if tiktok_base_url:
            argv += ["--tiktok-base-url", tiktok_base_url]
        return cls([*argv, *extra_args], data_dir / f"server-{role}.log", key_file, env)

    @property
    def command(self) -> str:
        return display_command(self.argv)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        log = self.log_path.open("ab")
        # stdout is read here to stamp the moment it serves; logs (stderr) go to a file so no pipe can fill up.
        self.process = await asyncio.create_subprocess_exec(*self.argv, cwd=ROOT, env=self.env,
                                                            stdout=asyncio.subprocess.PIPE, stderr=log)
        log.close()
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"server exited before serving; see {self.log_path}:\n{self.log_tail()}")
                match = _SERVING.search(line.decode())
                if match:
                    self.ready_at = time.monotonic()
                    self.port = int(match.group(1))
                    if http := _SERVING_HTTP.search(line.decode()):
                        self.http_port = int(http.group(1))
                    break
        if self.key_file is not None:
            self.key = self.key_file.read_text().strip()
        asyncio.get_running_loop().create_task(self._drain_stdout())
        return self

    async def _drain_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # The server's figures are its process tree's: the default deployment runs its dispatcher in a child process.

    def rss_mb(self) -> float:
        return _tree_status_mb(self.pid, "VmRSS")

    def rss_breakdown_mb(self) -> dict[str, float]:
        """Anonymous (heap, arenas), file-backed and shared-memory parts of the resident set."""
        return {f: round(_tree_status_mb(self.pid, f), 1) for f in ("RssAnon", "RssFile", "RssShmem")}

    def peak_rss_mb(self) -> float:
        return _tree_status_mb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server (with its child processes, living or ended) has used so far."""
        own = _stat_fields(self.pid)
        ticks = sum(int(f) for f in own[11:15])  # utime, stime, and those of its ended children
        for pid in process_tree(self.pid)[1:]:
            try:
                ticks += sum(int(f) for f in _stat_fields(pid)[11:13])
            except OSError:  # ended meanwhile: its time moves to its parent's ended children
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    async def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def __aenter__(self) -> "ServerProcess":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def database_cpu_seconds(database_url: str) -> float:
    """User + system CPU time PostgreSQL's backends serving this database have used so far (their process titles
    name it; the shared WAL writer and checkpointer are left out), for where a benchmark's time goes; 0 on SQLite,
    whose work is the server's own."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        return 0.0
    total = 0
    needle = f" {url.database} ".encode()
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """The process and its descendants, parents first."""
    tree, i = [pid], 0
    while i < len(tree):
        for task in pathlib.Path(f"/proc/{tree[i]}/task").glob("*/children"):
            try:
                tree += [int(child) for child in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return tree


def _tree_status_mb(pid: int, field: str) -> float:
    total = proc_status_mb(pid, field)
    for child in process_tree(pid)[1:]:
        try:
            total += proc_status_mb(child, field)
        except OSError:
            pass
    return total


def proc_status_mb(pid: int, field: str) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


async def run_helper(module: str, *args: str, timeout_s: float = 900.0) -> tuple[dict, str]:  # type: ignore[type-arg]
    """Runs `python -m bench.<module> args` and returns (its last stdout line as JSON, its command line)."""
    argv = [PYTHON, "-m", f"bench.{module}", *args]
    process = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{display_command(argv)} took longer than {timeout_s:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{display_command(argv)} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    lines = stdout.decode().strip().splitlines()
    return json.loads(lines[-1]), display_command(argv)


@contextlib.asynccontextmanager
async def fresh_database(base_url: str, data_dir: pathlib.Path) -> AsyncIterator[str]:
    """A new empty database: a SQLite file in data_dir, or a PostgreSQL database created on the server of base_url
    (any database name in it is ignored) and dropped afterwards."""
    if not base_url or base_url.startswith("sqlite"):
        os.makedirs(data_dir, exist_ok=True)
        yield f"sqlite+aiosqlite:///{data_dir / 'postbacks.db'}"
        return
    import asyncpg

    url = make_url(base_url)
    name = f"postbacks_bench_{secrets.token_hex(6)}"
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _py_spy() -> str:
    py_spy = shutil.which("py-spy") or str(pathlib.Path(PYTHON).parent / "py-spy")
    if not pathlib.Path(py_spy).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return py_spy


class Profiler:
    """py-spy sampling one process from start() to finish(), when profiling was asked for; writes collapsed
    stacks (flamegraph.pl or speedscope read them) and summarises where the time went."""

    def __init__(self, out_path: pathlib.Path | None) -> None:
        self.out_path = out_path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, pid: int) -> None:
        if self.out_path is None:
            return
        py_spy = _py_spy()
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "200", "--format", "raw", "--nonblocking",
            "--output", str(self.out_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def finish(self) -> str | None:
        """Stops recording (py-spy writes its file on SIGINT) and returns the summary."""
        if self._process is None or self.out_path is None:
            return None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self._process.wait(), 60)
        except TimeoutError:
            self._process.kill()
        self._process = None
        if not self.out_path.exists():
            return None
        return summarize_collapsed(self.out_path)


# Frames every stack shares (interpreter start-up, thread bootstrap): they say nothing about where time goes.
_SHARED_FRAMES = ("<frozen runpy>", "threading.py", "server/__main__.py", "uvloop/__init__.py",
                  "bench/traced_server.py")
# Own time of these lines is not Python work; py-spy (without --native) cannot see below them.
_NATIVE_LINES = {
    "asyncio/runners.py:118": "[native code under the event loop: uvloop, grpc core, I/O]",
    "aiosqlite/core.py:63": "[SQLite executing statements, in aiosqlite's worker threads]",
    "aiosqlite/core.py:59": "[aiosqlite worker threads waiting for work: idle, counted by --nonblocking]",
}


def _function(frame: str) -> str:
    """`name (file:line)` becomes `name (file)`, except for lines that stand for native work."""
    for line, label in _NATIVE_LINES.items():
        if line in frame:
            return label
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if name else frame


def summarize_collapsed(path: pathlib.Path, top: int = 15) -> str:
    """Top functions by own samples and by inclusive samples, from py-spy's collapsed-stack output: for each process
    when py-spy followed the server's child processes too (their stacks start with `process PID:"command"`)."""
    by_process: dict[str, list[tuple[list[str], int]]] = {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        process = ""
        # A child's stacks start with its parent's frame, then its own.
        while frames and (match := _PROCESS_FRAME.match(frames[0])):
            frames = frames[1:]
            role = re.search(r"--role (\w+)", match.group(2))
            process = f"process {match.group(1)} ({role.group(1) if role else 'dispatcher process'})"
        by_process.setdefault(process, []).append((frames, int(count_text)))
    if len(by_process) == 1:
        return _summarize_stacks(next(iter(by_process.values())), top)
    return "\n".join(f"{process}: {_summarize_stacks(stacks, top)}" for process, stacks in sorted(by_process.items()))


_PROCESS_FRAME = re.compile(r'process (\d+):"(.*)"')


def _summarize_stacks(stacks: list[tuple[list[str], int]], top: int) -> str:
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for stack, count in stacks:
        total += count
        frames = [f for f in stack if not any(shared in f for shared in _SHARED_FRAMES)]
        if not frames:
            continue
        own[_function(frames[-1])] = own.get(_function(frames[-1]), 0) + count
        for function in {_function(f) for f in frames} - set(_NATIVE_LINES.values()) - {"Runner.run (asyncio/runners.py)"}:
            inclusive[function] = inclusive.get(function, 0) + count
    if not total:
        return "no samples"
    lines = [f"{total} samples (200/s, all threads); by own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("by inclusive time:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines)
