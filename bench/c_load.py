"""Builds bench/grpc_load.c (installing libnghttp2-dev when missing) and runs it against a server, closed loop or paced."""

import asyncio
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from bench.procs import display_command

SOURCE = pathlib.Path(__file__).with_name("grpc_load.c")
HEADER = pathlib.Path("/usr/include/nghttp2/nghttp2.h")


def _install_nghttp2_dev() -> None:
    """The C client needs libnghttp2's headers; on Debian they come from libnghttp2-dev."""
    if HEADER.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError("the C load generator needs libnghttp2's headers: run `apt-get install -y libnghttp2-dev` "
                           "(or your system's nghttp2 development package) and try again")
    print("bench: installing libnghttp2-dev for the C load generator", flush=True)
    result = subprocess.run([apt, "install", "-y", "libnghttp2-dev"], capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run([apt, "update"], capture_output=True)
        subprocess.run([apt, "install", "-y", "libnghttp2-dev"], check=True, capture_output=True)


def build() -> pathlib.Path:
    """Compiles the client once per version of its source, into a cache outside the repository."""
    _install_nghttp2_dev()
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("the C load generator needs a C compiler: apt-get install -y gcc")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = pathlib.Path(tempfile.gettempdir()) / f"postbacks-grpc-load-{digest}"
    if not binary.exists():
        partial = binary.with_suffix(".partial")
        subprocess.run([compiler, "-O2", "-o", str(partial), str(SOURCE), "-lnghttp2"], check=True)
        partial.rename(binary)
    return binary


async def run(binary: pathlib.Path, port: int, path: str, bodies: Sequence[pathlib.Path], placeholder: str, *,
              in_flight: int, connections: int, warmup_s: float, duration_s: float, key_divisor: int = 1,
              headers: Sequence[str] = ()) -> tuple[dict, str]:  # type: ignore[type-arg]
    """Closed loop. With key_divisor D, D consecutive requests share their placeholder's digits (see grpc_load.c).
    Returns the client's JSON report and its command line (the key in an authorization header is elided)."""
    return await _run(binary, port, path, bodies, placeholder, headers, [
        "--connections", str(connections), "--in-flight", str(in_flight), "--warmup", str(warmup_s),
        "--duration", str(duration_s), "--key-divisor", str(key_divisor)])


async def run_paced(binary: pathlib.Path, port: int, path: str, body: pathlib.Path, placeholder: str, *, rate: float,
                    count: int, times: pathlib.Path,
                    headers: Sequence[str] = ()) -> tuple[list[tuple[int, float, float, float]], dict, str]:  # type: ignore[type-arg]
    """Open loop on one connection, as one game server's channel: request k (counter k) is due at start + k/rate
    and goes out then, however many are in flight. Returns each request's (counter, due_at, sent_at, acked_at; 0
    when it failed) in CLOCK_MONOTONIC seconds, the client's JSON report and its command line."""
    report, command = await _run(binary, port, path, [body], placeholder, headers, [
        "--connections", "1", "--in-flight", "1", "--rate", str(rate), "--count", str(count), "--times", str(times)])
    rows = [line.split() for line in (await asyncio.to_thread(times.read_text)).splitlines()]
    return [(int(k), float(due), float(sent), float(acked)) for k, due, sent, acked in rows], report, command


async def _run(binary: pathlib.Path, port: int, path: str, bodies: Sequence[pathlib.Path], placeholder: str,
               headers: Sequence[str], options: list[str]) -> tuple[dict, str]:  # type: ignore[type-arg]
    argv = [str(binary), "--port", str(port), "--path", path, "--placeholder", placeholder, *options]
    for body in bodies:
        argv += ["--body", str(body)]
    for header in headers:
        argv += ["--header", header]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"grpc_load failed ({process.returncode}): {stderr.decode()[-2000:]}")
    shown = [a if not a.startswith("authorization:") else "authorization: Bearer $KEY" for a in argv]
    return json.loads(stdout.decode().strip().splitlines()[-1]), display_command(shown)
