"""The real server as a subprocess (`python -m server`): started with flags, killed with SIGKILL, restarted."""

import asyncio
import dataclasses
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Self

from server.settings import Settings

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_PORT_LINE = re.compile(r"serving gRPC on port (\d+)")
_KEY_LINE = re.compile(r"full-access key \(kept in .*\): (\S+)")
_METRICS_LINE = re.compile(r"serving Prometheus metrics on http://[^:]+:(\d+)/metrics")
START_TIMEOUT_S = 60.0


def server_flags(settings: Settings) -> list[str]:
    """The command-line flags that give `python -m server` these settings (those that differ from the defaults)."""
    defaults = Settings()
    flags: list[str] = []
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value != getattr(defaults, f.name):
            flags += ["--" + f.name.replace("_", "-"), str(value)]
    return flags


def free_port() -> int:
    """A port free right now, for a server that must come back on the same address after a restart."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


class ServerProcess:
    """One run of `python -m server`. Its stdout and stderr go to files in log_dir (run N gets its own), so a
    chatty server never blocks on a full pipe and a failing test can show what the server said."""

    def __init__(self, settings: Settings, log_dir: pathlib.Path, name: str = "server") -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.name = name
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.dev_key: str | None = None
        self.metrics_port: int | None = None
        self._stdout_path = self._stderr_path = log_dir

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def spawn(self) -> None:
        """Starts the process; `started()` (async) or `started_sync()` waits until it serves."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.runs += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stdout_path = self.log_dir / f"{self.name}-{self.runs}.out"
        self._stderr_path = self.log_dir / f"{self.name}-{self.runs}.err"
        self.port = self.metrics_port = None
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", *server_flags(self.settings)],
                stdout=out, stderr=err, cwd=REPO_ROOT, env=self._environment(),
            )

    @staticmethod
    def _environment() -> dict[str, str]:
        """This process's environment without POSTBACKS_* variables: the flags alone decide the settings."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("POSTBACKS_")}
        return {**env, "PYTHONUNBUFFERED": "1"}

    def _poll_started(self) -> bool:
        """True once the process has said it serves (and, in development mode, printed its key)."""
        assert self.process is not None
        text = self._stdout_path.read_text(errors="replace")
        port = _PORT_LINE.search(text)
        key = _KEY_LINE.search(text)
        if port and (key or not self.settings.dev_key_file):
            self.port = int(port.group(1))
            self.dev_key = key.group(1) if key else None
            if self.settings.metrics_listen:
                metrics = _METRICS_LINE.search(self._stderr_path.read_text(errors="replace"))
                assert metrics, "the server serves but logged no metrics port"
                self.metrics_port = int(metrics.group(1))
            return True
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode} before serving:\n{self.output()}")
        return False

    async def started(self, timeout: float = START_TIMEOUT_S) -> Self:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not self._poll_started():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not serve within {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.02)
        return self

    def started_sync(self, timeout: float = START_TIMEOUT_S) -> Self:
        deadline = time.monotonic() + timeout
        while not self._poll_started():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not serve within {timeout}s:\n{self.output()}")
            time.sleep(0.02)
        return self

    async def start(self) -> Self:
        self.spawn()
        return await self.started()

    def start_sync(self) -> Self:
        self.spawn()
        return self.started_sync()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight calls and requests are cut off, transactions are abandoned."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it does not end in time; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def output(self, tail_chars: int = 6000) -> str:
        """What the current run printed (the end of stderr), for failure messages."""
        parts = []
        for path in (self._stdout_path, self._stderr_path):
            if path.is_file():
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail_chars:]}")
        return "\n".join(parts)

    def logs(self) -> str:
        """Everything every run of this server wrote to stderr."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}-*.err")))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.kill()
