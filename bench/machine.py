"""What the figures were measured on: CPU, cores, memory, Python, SQLite and library versions."""

import hashlib
import os
import pathlib
import platform
import sqlite3
import subprocess
from importlib import metadata


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def code_version() -> dict[str, object]:
    """The commit, and a digest of the server's sources as they are (the working tree may hold uncommitted work)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted((root / "server").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "server"], cwd=root, capture_output=True,
                                    text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", True
    return {"commit": commit, "server_uncommitted_changes": dirty, "server_sources_sha256": digest.hexdigest()[:12]}


def describe() -> dict[str, object]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "grpcio": _version("grpcio"),
        "uvloop": _version("uvloop"),
        "sqlalchemy": _version("sqlalchemy"),
        "aiohttp": _version("aiohttp"),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "code": code_version(),
    }


def one_line(info: dict[str, object]) -> str:
    code: dict[str, object] = info["code"]  # type: ignore[assignment]
    return (f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python {info['python']}, "
            f"SQLite {info['sqlite']}, grpcio {info['grpcio']}, uvloop {info['uvloop']}, "
            f"SQLAlchemy {info['sqlalchemy']}, aiohttp {info['aiohttp']}; load average at start {info['load_average']}"
            f"\ncode: commit {code['commit']}{' + uncommitted server changes' if code['server_uncommitted_changes'] else ''}"
            f", server sources {code['server_sources_sha256']}")
