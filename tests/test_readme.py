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
BIN = pathlib.Path(sys.executable).parent


def readme_commands() -> list[str]:
    """Each grpcurl command of the README's shell blocks, continuation lines and quoted newlines joined."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        current = ""
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current += line + "\n"
            if current.count("'") % 2 == 0 and not line.endswith("\\"):
                commands.append(current.strip())
                current = ""
    return [c for c in commands if c.startswith("grpcurl ")]


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
