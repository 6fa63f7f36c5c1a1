"""The pixel in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium): a landing page
on another origin records the paid click, identify links it to the player, a game server's launch is posted back
with the click id; an unlisted origin stores nothing, and a reload stores no second click."""

import asyncio
import json
import os
import pathlib
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from postbacks.v1 import network_pb2
from server.app import App
from server.core.access import KeyKind
from server.services import api_keys
from server.store.models import Event
from tests.conftest import running_app, wait_until
from tests.conftest import test_settings as settings_for
from tests.helpers import authorized_channel, create_config, ingest, launch

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# What each network's click looks like on the landing URL, and how the postback names it.
NETWORKS = {
    "tiktok": ("ttclid", "E.C.P.abc123", network_pb2.NETWORK_TIKTOK, "ttclid"),
    "reddit": ("rdt_cid", "t2_click42", network_pb2.NETWORK_REDDIT, "click_id"),
}


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = (f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver; "
                   ".ci/run installs them)")
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true requires the browser tests to run")
        pytest.skip(message)


class Browser:
    """A headless Chromium with a fresh profile. Selenium blocks, so each command runs in a thread: the server
    under test shares this test's event loop."""

    def __init__(self, profile: pathlib.Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        self._sent: dict[str, str] = {}  # request id -> "finished" | "failed", for POSTs to IngestEvent
        self._posts: set[str] = set()

    async def run(self, command: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(command, *args)

    async def open(self, url: str) -> None:
        await self.run(self.driver.get, url)

    async def script(self, source: str) -> Any:
        return await self.run(self.driver.execute_script, source)

    async def settled_posts(self) -> list[str]:
        """How each event POST the browser made so far ended ("finished" or "failed"), from its network log."""
        for entry in await self.run(self.driver.get_log, "performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                request = params["request"]
                if request["method"] == "POST" and request["url"].endswith("/IngestEvent"):
                    self._posts.add(params["requestId"])
            elif message["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
                if params["requestId"] in self._posts:
                    self._sent[params["requestId"]] = message["method"].removeprefix("Network.loading").lower()
        return list(self._sent.values())

    async def console_warnings(self) -> list[str]:
        return [e["message"] for e in await self.run(self.driver.get_log, "browser") if e["level"] == "WARNING"]

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
async def browser(tmp_path) -> AsyncIterator[Browser]:  # type: ignore[no-untyped-def]
    _require_browser()
    started = await asyncio.to_thread(Browser, tmp_path / "chromium-profile")
    try:
        yield started
    finally:
        await asyncio.to_thread(started.close)


@pytest.fixture
async def app(tmp_path, sqlite_url, fake_network) -> AsyncIterator[App]:  # type: ignore[no-untyped-def]
    # The browser is what is tested here, not the database: SQLite only.
    async with running_app(settings_for(tmp_path, sqlite_url, fake_network)) as running:
        yield running


class LandingSite:
    """A studio's marketing site on localhost (the service is on 127.0.0.1: another origin); its page carries
    `tag`, which may be set once the site's origin is known (a publishable key lists it)."""

    def __init__(self) -> None:
        self.tag = ""
        self.origin = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> "LandingSite":
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=f"<!doctype html><title>My game</title><h1>Play now</h1>{self.tag}",
                                content_type="text/html")

        application = web.Application()
        application.router.add_get("/", page)
        self._runner = web.AppRunner(application)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://localhost:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def landing_site() -> AsyncIterator[LandingSite]:
    site = await LandingSite().start()
    yield site
    await site.close()


def pixel_tag(app: App, game: str, key: str) -> str:
    return (f'<script async src="http://127.0.0.1:{app.http_port}/pixel.js" data-game="{game}" '
            f'data-key="{key}"></script>')


async def clicks(app: App, game: str, click_id: str) -> list[Event]:
    async with app.db.snapshot() as session:
        return list(await session.scalars(select(Event).where(Event.game_id == game, Event.kind == "ad_click",
                                                              Event.click_id == click_id)))


async def events_of(app: App, game: str) -> int:
    async with app.db.snapshot() as session:
        return await session.scalar(select(func.count()).select_from(Event).where(Event.game_id == game)) or 0


@pytest.mark.parametrize("network", NETWORKS)
async def test_a_paid_click_on_the_landing_page_is_posted_back_when_the_player_launches(  # type: ignore[no-untyped-def]
        app: App, browser: Browser, landing_site: LandingSite, fake_network, network: str) -> None:
    parameter, click_id, network_value, postback_field = NETWORKS[network]
    async with authorized_channel(app) as channel:
        await create_config(channel, "my-game", network=network_value)
    key, _ = await api_keys.create_key(app.ctx, KeyKind.PUBLISHABLE, ["my-game"], "site", [landing_site.origin])
    landing_site.tag = pixel_tag(app, "my-game", key)
    site = landing_site.origin

    await browser.open(f"{site}/?{parameter}={click_id}&utm_source=ads")
    (stored,) = await wait_until(lambda: clicks(app, "my-game", click_id), timeout=20)
    anonymous_id = (await browser.run(browser.driver.get_cookie, "pb_aid"))["value"]
    assert stored.anonymous_id == anonymous_id
    assert stored.landing_url == f"{site}/?{parameter}={click_id}&utm_source=ads"
    assert stored.ip_address == "127.0.0.1" and "Chrome" in (stored.user_agent or "")

    await browser.script('window.postbacks("identify", {userId: "player-7", email: "Player7@example.com"})')

    async def identified() -> bool:
        async with app.db.snapshot() as session:
            return bool(await session.scalar(select(Event).where(
                Event.game_id == "my-game", Event.kind == "identify", Event.user_id == "player-7",
                Event.anonymous_id == anonymous_id, Event.email_sha256.is_not(None))))

    await wait_until(identified, timeout=20)

    async with authorized_channel(app) as channel:  # the game server
        result = await ingest(channel, "my-game", launch("launch-1", user_id="player-7", seconds_ago=0))
    assert result.conversion.attributed_click.click_id == click_id
    # Besides create_config's credential check, the launch's postback carries the click id.
    postbacks = await wait_until(lambda: [r for r in fake_network.received(network) if click_id in json.dumps(r.json)],
                                 timeout=20)
    assert f'"{postback_field}": "{click_id}"' in json.dumps(postbacks[0].json)

    # A reload sends the click again with the same event id: the service keeps the first.
    posts_before = len(await browser.settled_posts())
    await browser.run(browser.driver.refresh)
    await wait_until(lambda: _more_posts(browser, posts_before), timeout=20)
    assert len(await clicks(app, "my-game", click_id)) == 1
    assert await browser.console_warnings() == []


async def _more_posts(browser: Browser, count: int) -> bool:
    return len(await browser.settled_posts()) > count


async def test_a_page_on_an_unlisted_origin_stores_nothing(app: App, browser: Browser, landing_site) -> None:  # type: ignore[no-untyped-def]
    key, _ = await api_keys.create_key(app.ctx, KeyKind.PUBLISHABLE, ["my-game"], "site", ["https://www.mygame.com"])
    landing_site.tag = pixel_tag(app, "my-game", key)
    await browser.open(f"{landing_site.origin}/?ttclid=E.C.P.stolen")
    # The browser gives up on the event (the preflight is refused) and retries once.
    settled = await wait_until(lambda: _posts_settled(browser, 2), timeout=20)
    assert set(settled) == {"failed"}
    assert await events_of(app, "my-game") == 0


async def _posts_settled(browser: Browser, count: int) -> list[str] | None:
    settled = await browser.settled_posts()
    return settled if len(settled) >= count else None


async def test_a_misconfigured_tag_warns_once_and_sends_nothing(app: App, browser: Browser, landing_site) -> None:  # type: ignore[no-untyped-def]
    landing_site.tag = f'<script async src="http://127.0.0.1:{app.http_port}/pixel.js"></script>'
    await browser.open(f"{landing_site.origin}/?ttclid=E.C.P.abc")
    await browser.script('window.postbacks("identify", {userId: "p"})')  # must not throw into the page

    async def warned() -> list[str]:
        return await browser.console_warnings()

    warnings = await wait_until(warned, timeout=20)
    assert len(warnings) == 1 and "data-game" in warnings[0]
    assert await browser.settled_posts() == []
