"""The README's grpcurl recipes work as written, run in order against the real server and the fake networks."""

import asyncio
import os
import pathlib
import re
import sys

import pytest

from tests.conftest import running_app
from tests.conftest import test_settings as settings_for

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
DOCS = README.parent / "docs"
BIN = pathlib.Path(sys.executable).parent


def readme_commands(path: pathlib.Path = README, programs: tuple[str, ...] = ("grpcurl ",)) -> list[str]:
    """Each command of a document's shell blocks that starts with one of `programs`, continuation lines and quoted
    newlines joined."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        current = ""
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current += line + "\n"
            if current.count("'") % 2 == 0 and not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
    return [c for c in commands if c.startswith(programs)]


async def test_every_readme_grpcurl_recipe_works(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    commands = readme_commands()
    assert len(commands) >= 15, "the README lost its recipes"
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as app:
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "KEY": app.dev_key or ""}
        for command in commands:
            if "-cacert" in command:  # the TLS recipe needs its own server; tests/test_tls.py covers it
                continue
            runnable = command.replace("localhost:50051", f"127.0.0.1:{app.port}").replace("-max-time 600", "-max-time 2")
            runnable = runnable.replace('"<next_page_token>"', '""')
            if "<last resume_token>" in runnable:
                continue  # a placeholder for a token printed by the previous tail
            process = await asyncio.create_subprocess_exec("bash", "-c", runnable, env=env, cwd=tmp_path,
                                                           stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, stderr = await process.communicate()
            if "-max-time" in runnable:  # a tail ends at its deadline: that is how the recipe stops it
                assert b"DeadlineExceeded" in stderr, (command, stderr.decode())
            else:
                assert process.returncode == 0, (command, stderr.decode())


@pytest.mark.parametrize("text", ["make run", "make test"])
def test_readme_names_the_two_commands(text: str) -> None:
    assert text in README.read_text()


async def test_every_curl_recipe_works(tmp_path, sqlite_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    """The HTTP API's recipes (README, then docs/api.md), in order, against the real server's HTTP listener."""
    commands = [c for path in (README, DOCS / "api.md") for c in readme_commands(path, ("curl ", "printf "))
                if "localhost:8080" in c]
    assert len(commands) >= 16, "the HTTP recipes went missing"
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as app:
        env = {**os.environ, "KEY": app.dev_key or ""}
        for command in commands:
            runnable = command.replace("localhost:8080", f"127.0.0.1:{app.http_port}").replace("--max-time 5",
                                                                                                "--max-time 1")
            process = await asyncio.create_subprocess_exec("bash", "-o", "pipefail", "-c", runnable, env=env,
                                                           cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                                                           stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await process.communicate()
            if "--max-time" in runnable:  # a stream is still open at the deadline: that is how the recipe ends
                assert process.returncode == 28 and b"resumeToken" in stdout, (command, stdout, stderr)
            else:
                assert process.returncode == 0, (command, stdout.decode(), stderr.decode())
