"""The site chat widget: its channel (origins, session ids), and the widget in a real headless Chromium.

Three levels:

* the channel's rules as plain functions (origin policy, session ids, the
  shared rooms' settings) and its routes on a Sanic app;
* an echo server: the widget channel alone in its own process on loopback,
  with ``WIDGET_ORIGINS`` set and a handler that answers every message (with
  buttons, links or markup on request); it can be restarted, which the
  reconnect test needs, and pointed at a Redis that is down;
* the real assistant (``python -m bot run``, the `assistant` fixture): a
  shopper finds a demo order through the demo shop page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union
from urllib.parse import urljoin

import httpx
import pytest
import websockets
from playwright.async_api import Browser, Page, expect
from sanic import Sanic
from socketio import AsyncRedisManager

from bot.config import SettingsError, load_settings
from connectors.widget import (
    MAX_MESSAGE_CHARS,
    SOCKETIO_CLIENT,
    WIDGET_DIR,
    OriginPolicy,
    WidgetInput,
    accepted_session_id,
    new_session_id,
    normalise_origin,
)

from .helpers.servers import Server, free_port
from .helpers.shopper import tracker
from .helpers.waits import wait_for, wait_until

SHOP_ORIGIN = "https://shop.example"
EVIL_ORIGIN = "http://evil.example"
HEX32 = re.compile(r"[0-9a-f]{32}")
#: A bot reply after Rasa and the action server have worked: generous on a busy machine.
REPLY_TIMEOUT_MS = 60_000

#: What the shopper types to try to run script in the page.
INJECTION = '<img src=x onerror="window.__owned = 1">'


# --- the channel's rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "configured, origin, host, allowed",
    [
        ([], "http://127.0.0.1:5005", "127.0.0.1:5005", True),  # nothing configured: the server's own page
        ([], "https://bot.example", "bot.example", True),  # own page behind a TLS proxy
        ([], SHOP_ORIGIN, "127.0.0.1:5005", False),  # nothing configured: a shop's page is not enough
        ([SHOP_ORIGIN], SHOP_ORIGIN, "127.0.0.1:5005", True),  # the shop's page
        ([SHOP_ORIGIN], "https://SHOP.example:443", "127.0.0.1:5005", True),  # same origin, spelled otherwise
        ([SHOP_ORIGIN], "http://shop.example", "127.0.0.1:5005", False),  # plain http is another origin
        ([SHOP_ORIGIN], "https://shop.example.evil.example", "127.0.0.1:5005", False),  # a lookalike host
        ([SHOP_ORIGIN], "https://shop.example:8443", "127.0.0.1:5005", False),  # another port
        ([SHOP_ORIGIN], EVIL_ORIGIN, "127.0.0.1:5005", False),  # a foreign page
        ([SHOP_ORIGIN], "null", "127.0.0.1:5005", False),  # sandboxed frames and file:// pages
        ([SHOP_ORIGIN], "", "127.0.0.1:5005", False),  # an empty header
        (["*"], EVIL_ORIGIN, "127.0.0.1:5005", True),  # "*" opens it to every page, on purpose
    ],
)
def test_origin_policy_accepts_only_the_shops_pages_and_the_servers_own(configured, origin, host, allowed):
    """A page may connect only from WIDGET_ORIGINS or from the assistant's own origin."""
    assert OriginPolicy(configured)(origin, {"HTTP_HOST": host}) is allowed


def test_origins_compare_without_default_ports_or_case():
    """A setting and a browser's Origin header compare equal however they spell the same origin."""
    assert normalise_origin("https://Shop.Example:443/") == "https://shop.example"
    assert normalise_origin("http://shop.example:8080") == "http://shop.example:8080"
    for not_an_origin in ("ftp://shop.example", "https://shop.example/path", "null", "shop.example", ""):
        assert normalise_origin(not_an_origin) is None


def test_only_random_session_ids_in_the_widgets_format_are_honoured():
    """A guessable or foreign session id is replaced by 128 fresh random bits; a widget id is kept."""
    mine = new_session_id()
    assert HEX32.fullmatch(mine) and mine != new_session_id()
    assert accepted_session_id(mine) == (mine, True)
    for guessable in ("1", "default", "shopper-42", mine.upper(), mine[:-1], mine + "0", 12, None, {"id": mine}):
        replacement, honoured = accepted_session_id(guessable)
        assert not honoured and HEX32.fullmatch(replacement) and replacement != guessable


def test_credentials_yml_takes_only_the_shared_rooms_options_for_the_widget():
    """Another option in credentials.yml stops the server, instead of looking like a setting that works."""
    with pytest.raises(ValueError, match="WIDGET_ORIGINS") as refused:
        WidgetInput.from_credentials({"cors_allowed_origins": "*", "redis_url": "redis://redis.internal:6379/0"})
    assert "takes only redis_url and redis_channel" in str(refused.value)


# --- the shared rooms' settings -------------------------------------------------------------

REDIS_AT = "redis://:s3cret-word@redis.internal:6380/2"


def widget_channel(monkeypatch: pytest.MonkeyPatch, credentials: Optional[Dict[str, Any]] = None,
                   **environ: str) -> WidgetInput:
    """The channel as Rasa builds it from the credentials file, under the settings `environ` gives."""
    settings = load_settings(environ=environ, env_file=Path("/nonexistent/.env"))
    monkeypatch.setattr("connectors.widget.get_settings", lambda: settings)
    channel = WidgetInput.from_credentials(credentials)
    assert isinstance(channel, WidgetInput)

    async def ignore(_message: Any) -> None:
        return None

    channel.blueprint(ignore)
    return channel


@pytest.mark.parametrize("credentials, environ, url, channel", [
    # the settings alone, with the default channel
    (None, {"WIDGET_REDIS_URL": REDIS_AT}, REDIS_AT, "wismo-widget"),
    # the settings alone, a shop's own channel
    (None, {"WIDGET_REDIS_URL": REDIS_AT, "WIDGET_REDIS_CHANNEL": "corner-shop"}, REDIS_AT, "corner-shop"),
    # the credentials file alone
    ({"redis_url": REDIS_AT, "redis_channel": "corner-shop"}, {}, REDIS_AT, "corner-shop"),
    # the credentials file wins over the settings, key by key
    ({"redis_url": "rediss://redis.internal:6379/0"}, {"WIDGET_REDIS_URL": REDIS_AT, "WIDGET_REDIS_CHANNEL": "b"},
     "rediss://redis.internal:6379/0", "b"),
    # empty keys in the credentials file (an unset ${VAR}) leave the settings in force
    ({"redis_url": "", "redis_channel": None}, {"WIDGET_REDIS_URL": REDIS_AT}, REDIS_AT, "wismo-widget"),
])
def test_a_redis_url_shares_the_rooms_through_redis_on_the_configured_channel(monkeypatch, request, credentials,
                                                                              environ, url, channel):
    """The socket.io server publishes through Redis on the shop's channel; the log shows no password."""
    # The records are caught at the module's logger itself: Rasa's logging set-up, run by earlier tests in
    # this process, may have disabled it or cut it off from the root logger pytest listens on.
    widget_log = logging.getLogger("connectors.widget")
    records: List[logging.LogRecord] = []
    catcher = logging.Handler(logging.INFO)
    catcher.emit = records.append  # type: ignore[method-assign]
    monkeypatch.setattr(widget_log, "disabled", False)
    monkeypatch.setattr(widget_log, "level", logging.INFO)
    widget_log.addHandler(catcher)
    request.addfinalizer(lambda: widget_log.removeHandler(catcher))
    server = widget_channel(monkeypatch, credentials, **environ).sio
    assert server is not None
    manager = server.manager
    assert isinstance(manager, AsyncRedisManager)
    assert (manager.redis_url, manager.channel) == (url, channel)
    assert manager.redis_options["socket_connect_timeout"] > 0  # an unreachable Redis cannot hold a reply
    logged = "\n".join(record.getMessage() for record in records)
    assert "redis.internal" in logged and "s3cret-word" not in logged


@pytest.mark.parametrize("credentials", [
    None,  # credentials.yml lists the channel without options
    {"redis_url": ""},  # `redis_url: ${WIDGET_REDIS_URL}` with the variable empty
    {"redis_url": " ", "redis_channel": "shop-b"},  # a channel alone shares nothing
])
@pytest.mark.parametrize("environ", [{}, {"WIDGET_REDIS_URL": ""}, {"WIDGET_REDIS_CHANNEL": "shop-b"}])
def test_without_a_redis_url_the_rooms_stay_in_the_process(monkeypatch, credentials, environ):
    """No URL anywhere: the channel starts and publishes nothing; one Rasa server needs no Redis."""
    server = widget_channel(monkeypatch, credentials, **environ).sio
    assert server is not None and not isinstance(server.manager, AsyncRedisManager)


@pytest.mark.parametrize("url, reason", [
    ("http://redis.internal:6379/0", "must start with redis://"),  # another scheme
    ("redis.internal:6379", "must start with redis://"),  # no scheme at all
    ("redis://:s3cret-word@redis.internal:70000/0", "port"),  # out of range
    ("redis://:s3cret-word@redis.internal:port/0", "port"),  # not a number
    ("redis:///0", "needs a host"),  # no host
    ("redis://:s3cret-word@redis.internal:6379/zero", "database number"),  # a path that is not a database
    ("redis://redis.internal:6379/0?socket_timeout=soon", "socket_timeout"),  # an option redis-py cannot read
    ("redis://redis.internal :6379/0", "without spaces"),  # a stray space
])
def test_a_malformed_redis_url_stops_start_up_naming_the_setting_without_the_password(monkeypatch, url, reason):
    """WIDGET_REDIS_URL and the credentials file's redis_url are refused with the reason, never the password."""
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={"WIDGET_REDIS_URL": url}, env_file=Path("/nonexistent/.env"))
    assert "WIDGET_REDIS_URL: " in str(refused.value) and reason in str(refused.value)
    assert "s3cret-word" not in str(refused.value)
    with pytest.raises(ValueError) as refused_there:
        widget_channel(monkeypatch, {"redis_url": url})
    assert "redis_url of the widget channel in credentials.yml" in str(refused_there.value)
    assert reason in str(refused_there.value) and "s3cret-word" not in str(refused_there.value)


def test_a_channel_name_with_spaces_or_a_non_string_option_is_refused(monkeypatch):
    """WIDGET_REDIS_CHANNEL and redis_channel take a plain name; options in credentials.yml are strings."""
    with pytest.raises(SettingsError, match="WIDGET_REDIS_CHANNEL: letters, digits"):
        load_settings(environ={"WIDGET_REDIS_CHANNEL": "corner shop"}, env_file=Path("/nonexistent/.env"))
    with pytest.raises(ValueError, match="redis_channel of the widget channel"):
        widget_channel(monkeypatch, {"redis_url": REDIS_AT, "redis_channel": "corner shop"})
    with pytest.raises(ValueError, match="redis_url of the widget channel in credentials.yml must be a string"):
        widget_channel(monkeypatch, {"redis_url": 6379})


def test_the_widget_routes_and_the_socketio_endpoint_are_registered():
    """The channel serves the demo page, the script, the stylesheet and socket.io where the runner says."""
    channel = WidgetInput(origins=[SHOP_ORIGIN])
    app = Sanic(f"widget_routes_{uuid.uuid4().hex[:8]}")

    async def ignore(_message: Any) -> None:
        return None

    app.blueprint(channel.blueprint(ignore), url_prefix=urljoin("/webhooks/", channel.url_prefix()))
    paths = {route.path for route in app.router.routes}
    assert {"widget", "widget/widget.js", "widget/widget.css", "widget/health", "socket.io"} <= paths
    assert channel.name() == "widget" and channel.get_output_channel() is not None


def test_the_socketio_client_is_installed_from_the_lock_file():
    """`make setup` installed the pinned socket.io-client 4.x, so the widget can be served."""
    client = WIDGET_DIR / SOCKETIO_CLIENT
    assert client.is_file(), "run `make setup` (it runs npm ci in widget/)"
    assert re.search(r"Socket\.IO v4\.\d+\.\d+", client.read_text(encoding="utf-8")[:200])


# --- the echo server -----------------------------------------------------------------------


def serve_echo(port: int, origins: str, redis_url: str = "") -> None:
    """Run the widget channel alone on `port`, answering every message; started by `EchoServer`."""
    from rasa.core.channels.channel import UserMessage

    channel = WidgetInput(origins=[o for o in origins.split(",") if o], redis_url=redis_url,
                          redis_channel=f"wismo-echo-{port}")
    app = Sanic(f"echo_{port}")

    async def answer(message: UserMessage) -> None:
        out, to = message.output_channel, message.sender_id
        if message.text == "buttons please":
            await out.send_text_with_buttons(to, "Pick one", [{"title": "First", "payload": "/first"},
                                                              {"title": "Second", "payload": "/second"}])
        elif message.text == "two please":
            await out.send_text_message(to, "one")
            await out.send_text_message(to, "two")
        elif message.text == "slow please":
            await asyncio.sleep(2)
            await out.send_text_message(to, "there you are")
        elif message.text == "markup please":
            await out.send_text_message(to, f'Look: {INJECTION} <b>bold</b> javascript:alert(1) '
                                            "and https://track.example/p?id=7.")
        else:
            await out.send_text_message(to, f"echo {to}: {message.text}")

    app.blueprint(channel.blueprint(answer), url_prefix=urljoin("/webhooks/", channel.url_prefix()))
    app.run(host="127.0.0.1", port=port, access_log=False)


class EchoServer(Server):
    """The echo server in a child process, so it can be stopped and started like a real server."""

    def __init__(self, origins: str, redis_url: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = f"from tests.test_widget import serve_echo; serve_echo({self.port}, {origins!r}, {redis_url!r})"
        super().__init__([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         name="the echo server", ready=self.answers)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/widget/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 60) -> EchoServer:
        super().start(timeout)
        return self

    def stop(self, timeout: float = 15) -> Optional[int]:
        return super().stop(timeout)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer(origins=SHOP_ORIGIN).start()
    yield server
    server.stop()


async def handshake(url: str, origin: Optional[str]) -> str:
    """Open a socket.io websocket with `origin`; the engine.io open packet, or the refusal."""
    address = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    try:
        async with websockets.connect(address, origin=origin, open_timeout=10) as ws:
            return str(await asyncio.wait_for(ws.recv(), 10))
    except websockets.exceptions.InvalidStatusCode as refused:
        return f"refused {refused.status_code}"


class Shopper:
    """A socket.io client speaking the widget's protocol over a raw websocket, recording what the bot sends.

    (python-socketio's own client needs a newer aiohttp than Rasa 3.6 allows;
    engine.io v4 and socket.io v5 framing is small enough to speak directly.)
    """

    def __init__(self, url: str) -> None:
        self.address = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.events: Dict[str, asyncio.Queue[Any]] = {"session_confirm": asyncio.Queue(),
                                                      "bot_uttered": asyncio.Queue(), "turn_done": asyncio.Queue()}

    async def __aenter__(self) -> Shopper:
        self.ws = await websockets.connect(self.address, open_timeout=10)
        assert str(await self.ws.recv()).startswith("0{")  # engine.io: open
        await self.ws.send("40")  # socket.io: connect to the main namespace
        assert str(await asyncio.wait_for(self.ws.recv(), 10)).startswith("40")
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.reader.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        async for packet in self.ws:
            if packet == "2":
                await self.ws.send("3")  # engine.io: pong
            elif isinstance(packet, str) and packet.startswith("42"):
                event, *args = json.loads(packet[2:])
                if event in self.events:
                    self.events[event].put_nowait(args[0] if args else None)

    async def emit(self, event: str, data: Any) -> None:
        await self.ws.send("42" + json.dumps([event, data]))

    async def session(self, session_id: Any) -> str:
        await self.emit("session_request", {"session_id": session_id})
        return await asyncio.wait_for(self.events["session_confirm"].get(), 10)

    async def say(self, text: str, session_id: Optional[str]) -> None:
        await self.emit("user_uttered", {"message": text, "session_id": session_id})

    async def reply(self, timeout: float = 10) -> Dict[str, Any]:
        """The next message the bot sent this connection."""
        return await asyncio.wait_for(self.events["bot_uttered"].get(), timeout)

    async def turn(self, timeout: float = 10) -> List[Dict[str, Any]]:
        """Wait for the end of the connection's turn; every message the bot sent before it."""
        await asyncio.wait_for(self.events["turn_done"].get(), timeout)
        said = []
        while not self.events["bot_uttered"].empty():
            said.append(self.events["bot_uttered"].get_nowait())
        return said


async def test_the_shops_origin_connects_and_a_foreign_origin_is_refused(echo):
    """The engine.io handshake from WIDGET_ORIGINS or the server's own page opens; evil.example gets 400."""
    assert (await handshake(echo.url, SHOP_ORIGIN)).startswith("0{")
    assert (await handshake(echo.url, echo.url)).startswith("0{")
    assert await handshake(echo.url, EVIL_ORIGIN) == "refused 400"
    refused = httpx.get(f"{echo.url}/socket.io/", params={"EIO": "4", "transport": "websocket"},
                        headers={"Origin": EVIL_ORIGIN})
    assert refused.status_code == 400 and "not an accepted origin" in refused.text


async def test_long_polling_is_not_offered(echo):
    """Only the websocket transport is served: browsers apply no CORS to it, so Rasa's CORS setup cannot clash."""
    polling = httpx.get(f"{echo.url}/socket.io/", params={"EIO": "4", "transport": "polling"},
                        headers={"Origin": echo.url})
    assert polling.status_code == 400 and "Invalid transport" in polling.text


async def test_a_guessable_session_id_is_replaced_by_a_random_one(echo):
    """Asking for session "1" confirms a fresh 128-bit id instead, and the conversation runs under it."""
    async with Shopper(echo.url) as shopper:
        given = await shopper.session("1")
        assert HEX32.fullmatch(given)
        await shopper.say("hello", given)
        assert (await shopper.reply())["text"] == f"echo widget:{given}: hello"


async def test_messages_are_bound_to_the_connections_own_session(echo):
    """A connection speaks only in the session it was confirmed for, and hears only that session."""
    async with Shopper(echo.url) as mine, Shopper(echo.url) as other, Shopper(echo.url) as stranger:
        my_session = await mine.session(new_session_id())
        other_session = await other.session(new_session_id())
        await mine.say("into the other conversation", other_session)
        await stranger.say("no session asked for", my_session)
        await mine.say("x" * (MAX_MESSAGE_CHARS + 1), my_session)
        # The markers: after those, each connection says something it may say.  The server echoes
        # every message it takes, so the echo of its own marker must be the first thing each one hears.
        await mine.say("mine", my_session)
        assert (await mine.reply())["text"] == f"echo widget:{my_session}: mine"
        await other.say("other's", other_session)
        assert (await other.reply())["text"] == f"echo widget:{other_session}: other's"
        stranger_session = await stranger.session(new_session_id())
        await stranger.say("now with a session", stranger_session)
        assert (await stranger.reply())["text"] == f"echo widget:{stranger_session}: now with a session"


@pytest.mark.slow  # starts echo servers
@pytest.mark.parametrize("outage, said", [
    ("down", "Cannot publish to redis"),  # python-socketio's own report; it tried twice
    ("silent", "Redis took no widget message"),  # the bound on publishing
])
async def test_with_its_redis_out_a_replica_still_answers_the_widgets_connected_to_it(outage, said):
    """Redis down (nothing listens) or silent (takes connections, never answers): every message still arrives.

    The server hands each message to its own sockets before publishing it
    for the other replicas.  A Redis that never answers would hold the
    publish, and so the rest of the turn, for good: publishing is bounded,
    so the second message of the turn comes too, and the turn ends.  The
    server keeps running and says what is wrong.
    """
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        if outage == "silent":
            silent.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
        server = EchoServer(origins="", redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0").start()
        try:
            async with Shopper(server.url) as shopper:
                session = await shopper.session(new_session_id())
                for _ in range(2):
                    await shopper.say("two please", session)
                    assert [m["text"] for m in await shopper.turn(timeout=15)] == ["one", "two"]
            server.check_alive()
            wait_until(lambda: said in server.text(), what=f"the server saying {said!r}", timeout=10)
        finally:
            server.stop()


async def test_the_widget_script_keeps_the_socketio_client_out_of_the_pages_globals(echo):
    """widget.js carries the socket.io client in its own scope: no global `io` for the shop's page."""
    script = httpx.get(f"{echo.url}/widget/widget.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
    assert "Socket.IO v4" in script.text and "sourceMappingURL" not in script.text


#: Script errors seen on each page, for the asserts at the end of a test.
PAGE_ERRORS: Dict[int, List[str]] = {}


class Sockets:
    """The websockets a page opens from now on (refused handshakes too) and every frame it sends on them."""

    def __init__(self, page: Page) -> None:
        self.opened: List[Any] = []
        self.sent: List[Union[str, bytes]] = []
        page.on("websocket", self._opened)

    def _opened(self, socket: Any) -> None:
        self.opened.append(socket)
        socket.on("framesent", lambda payload: self.sent.append(payload))


async def open_demo(browser: Browser, url: str, **context: Any) -> Page:
    """The demo shop page in a fresh browser profile, with the widget opened by its launcher."""
    page = await (await browser.new_context(**context)).new_page()
    errors = PAGE_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{url}/widget/")
    await page.get_by_role("button", name=re.compile("^Open chat")).click()
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    return page


async def say(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    await box.fill(text)
    await box.press("Enter")


def bot_bubbles(page: Page):
    return page.locator(".wsw-msg--bot:not(.wsw-typing) .wsw-bubble")


async def stored(page: Page) -> Dict[str, Any]:
    raw = await page.evaluate("Object.values(sessionStorage).map((v) => JSON.parse(v))[0] || null")
    assert raw, "the widget stored no conversation"
    return raw


def shop_page(server_url: str) -> str:
    """A shop's own page embedding the widget as the README says: a config object and one script tag.

    It also has an AMD loader, which must not swallow the widget's socket.io client.
    """
    return f"""<!doctype html><html lang="en"><head><title>Another shop</title></head><body>
<h1>Another shop</h1>
<script>window.define = function () {{ throw new Error("not for the widget"); }}; window.define.amd = {{}};</script>
<script>
  window.wismoWidget = {{
    serverUrl: "{server_url}",
    title: "Sparrow Help",
    greeting: "Hello from the shop's own page.",
    colors: {{ primary: "rgb(120, 30, 90)", primaryText: "rgb(255, 255, 238)", botBubble: "not a colour" }},
    position: "left"
  }};
</script>
<script src="{server_url}/widget/widget.js" defer></script>
</body></html>"""


async def open_shop_page(browser: Browser, origin: str, server_url: str) -> Page:
    """The shop page served at `origin` (the browser is told the page comes from there)."""
    context = await browser.new_context()
    await context.grant_permissions(["local-network-access"])  # a public page may load from this loopback server
    page = await context.new_page()
    await page.route(f"{origin}/", lambda route: route.fulfill(body=shop_page(server_url), content_type="text/html"))
    await page.goto(f"{origin}/")
    await page.get_by_role("button", name="Open chat: Sparrow Help").click()
    return page


async def test_a_shop_embeds_the_widget_with_a_config_object_and_one_script_tag(echo, browser):
    """On the shop's origin the widget connects, with the shop's title, greeting, colours and side."""
    page = await open_shop_page(browser, SHOP_ORIGIN, echo.url)
    await expect(page.get_by_role("dialog", name="Sparrow Help")).to_be_visible()
    await expect(bot_bubbles(page)).to_have_text(["Hello from the shop's own page."])
    header = page.locator(".wsw-header")
    assert await header.evaluate("(h) => getComputedStyle(h).backgroundColor") == "rgb(120, 30, 90)"
    assert await header.evaluate("(h) => getComputedStyle(h).color") == "rgb(255, 255, 238)"
    assert await bot_bubbles(page).evaluate("(b) => getComputedStyle(b).backgroundColor") == "rgb(238, 242, 240)"
    assert (await page.get_by_role("dialog").bounding_box())["x"] == 20
    await say(page, "from the shop")
    await expect(bot_bubbles(page).last).to_contain_text(": from the shop")
    assert await page.evaluate("typeof window.io") == "undefined"


async def test_a_page_on_a_foreign_origin_cannot_talk_to_the_assistant(echo, browser):
    """Embedded on evil.example, the widget's connection is refused and it says it cannot reach the chat."""
    page = await open_shop_page(browser, "https://evil.example", echo.url)
    await expect(page.get_by_role("status")).to_contain_text("Can't reach the chat")
    sockets = Sockets(page)
    await say(page, "anyone there?")
    # The marker: the widget's next try to connect, made with the message waiting to go, is refused too.
    tried = len(sockets.opened)
    await wait_for(lambda: len(sockets.opened) > tried and sockets.opened[-1].is_closed(),
                   what="a refused connection attempt after the message", timeout=15)
    assert not any("user_uttered" in str(frame) for frame in sockets.sent), sockets.sent
    assert await bot_bubbles(page).all_inner_texts() == ["Hello from the shop's own page."]


async def test_a_typing_indicator_shows_while_the_bot_works(echo, browser):
    """Between the shopper's message and the reply, three dots say the bot is on it."""
    page = await open_demo(browser, echo.url)
    await say(page, "slow please")
    typing = page.locator(".wsw-typing")
    await expect(typing).to_be_visible()
    await expect(typing).to_contain_text("is typing")
    await expect(bot_bubbles(page).last).to_have_text("there you are", timeout=10_000)
    await expect(typing).to_be_hidden()


async def test_each_message_is_added_to_the_live_log_once(echo, browser):
    """The conversation is a polite live region that grows by appending, so a screen reader reads each message once."""
    page = await open_demo(browser, echo.url)
    log = page.get_by_role("log", name="Conversation")
    assert await log.get_attribute("aria-live") == "polite"
    await log.locator(".wsw-msg").first.evaluate("(greeting) => { greeting.dataset.seen = 'yes'; }")
    await say(page, "one")
    await say(page, "two")
    await expect(bot_bubbles(page).last).to_contain_text(": two")
    await expect(log.locator(".wsw-msg[data-seen=yes]")).to_have_count(1)
    assert await log.locator(".wsw-msg").first.get_attribute("data-seen") == "yes"


async def test_bot_text_is_shown_as_text_and_only_web_addresses_become_links(echo, browser):
    """Markup from the bot appears literally and runs nothing; https links work, javascript: ones are text."""
    page = await open_demo(browser, echo.url)
    await say(page, "markup please")
    bubble = bot_bubbles(page).filter(has_text="Look:")
    await expect(bubble).to_have_count(1)
    assert INJECTION in await bubble.inner_text() and "<b>bold</b>" in await bubble.inner_text()
    assert await page.locator("#wismo-chat-widget img, #wismo-chat-widget b").count() == 0
    assert await page.evaluate("window.__owned") is None
    links = bubble.locator("a")
    await expect(links).to_have_count(1)
    assert await links.get_attribute("href") == "https://track.example/p?id=7"
    assert await links.inner_text() == "https://track.example/p?id=7"
    assert (await links.get_attribute("rel")).split() == ["noopener", "noreferrer", "nofollow"]
    assert not PAGE_ERRORS[id(page)]


async def test_quick_replies_are_buttons_that_send_their_payload_and_work_by_keyboard(echo, browser):
    """Buttons are reachable with Tab, Enter sends the payload, and Escape closes the panel."""
    page = await open_demo(browser, echo.url)
    await say(page, "buttons please")
    replies = page.get_by_role("group", name="Suggested replies").get_by_role("button")
    await expect(replies).to_have_text(["First", "Second"])
    await page.get_by_role("button", name="Close chat", exact=True).focus()
    for _ in range(10):  # from the header, Tab moves through the conversation to the buttons
        await page.keyboard.press("Tab")
        if await replies.nth(1).evaluate("(b) => b.getRootNode().activeElement === b"):
            break
    else:
        pytest.fail("Tab never reached the second quick reply")
    await page.keyboard.press("Enter")
    session = (await stored(page))["sessionId"]
    await expect(bot_bubbles(page).last).to_have_text(f"echo widget:{session}: /second")
    await expect(page.locator(".wsw-msg--user .wsw-bubble").last).to_have_text("Second")
    await expect(replies).to_have_count(0)
    await page.keyboard.press("Escape")
    launcher = page.get_by_role("button", name=re.compile("^Open chat"))
    await expect(launcher).to_be_focused()
    assert await launcher.get_attribute("aria-expanded") == "false"


async def test_the_widget_reconnects_after_the_server_restarts(browser):
    """The server goes away and comes back; the widget says so, reconnects and keeps its session."""
    server = EchoServer(origins="").start()
    try:
        page = await open_demo(browser, server.url)
        await say(page, "before")
        session = (await stored(page))["sessionId"]
        await expect(bot_bubbles(page).last).to_have_text(f"echo widget:{session}: before")
        server.stop()
        await expect(page.get_by_role("status")).to_contain_text("Reconnecting", timeout=10_000)
        server.start()
        await expect(page.get_by_role("status")).to_be_hidden(timeout=20_000)
        await say(page, "after")
        await expect(bot_bubbles(page).last).to_have_text(f"echo widget:{session}: after")
    finally:
        server.stop()


async def test_on_a_phone_the_panel_fills_the_screen(echo, browser):
    """At 390 px wide the open panel covers the screen and the launcher steps aside."""
    page = await open_demo(browser, echo.url, viewport={"width": 390, "height": 780}, is_mobile=True,
                           has_touch=True)
    panel = page.get_by_role("dialog")
    await panel.evaluate("(p) => Promise.all(p.getAnimations().map((a) => a.finished))")  # it slides in
    box = await panel.bounding_box()
    assert box == {"x": 0, "y": 0, "width": 390, "height": 780}
    await expect(page.locator(".wsw-launcher")).to_be_hidden()
    await say(page, "small screen")
    await expect(bot_bubbles(page).last).to_contain_text("small screen")


# --- the real assistant --------------------------------------------------------------------


async def test_a_shopper_finds_an_order_in_the_widget_and_keeps_the_conversation_on_reload(assistant, browser):
    """Demo page, widget, order number and postcode: the real status; a quick reply; a reload keeps it all."""
    order = assistant["orders"]["in_transit_on_time"]
    tracking = order["tracking_numbers"][0]
    page = await open_demo(browser, assistant["url"])
    await page.get_by_role("button", name="Where is my order?").click()  # the greeting's quick reply
    await expect(bot_bubbles(page).last).to_contain_text("order number", timeout=REPLY_TIMEOUT_MS)
    await say(page, order["order_number"])
    await expect(bot_bubbles(page).last).to_contain_text("postcode", timeout=REPLY_TIMEOUT_MS)
    await say(page, order["postcode"])
    status = bot_bubbles(page).filter(has_text=tracking)
    await expect(status).to_contain_text("on its way", timeout=REPLY_TIMEOUT_MS)
    await expect(bot_bubbles(page).filter(has_text="that matches")).to_have_count(1)
    link = status.locator("a")
    assert (await link.get_attribute("href")).startswith("https://") and tracking in await link.inner_text()

    await say(page, "what can you do?")
    late = page.get_by_role("group", name="Suggested replies").get_by_role("button", name="It's late")
    await late.click(timeout=REPLY_TIMEOUT_MS)  # a quick reply the bot sent
    await expect(bot_bubbles(page).filter(has_text="isn't late")).to_contain_text(
        order["order_number"], timeout=REPLY_TIMEOUT_MS)

    session = (await stored(page))["sessionId"]
    shown = page.locator(".wsw-msg:not(.wsw-typing) .wsw-bubble")
    before = await shown.all_inner_texts()
    await page.reload()
    await expect(bot_bubbles(page).filter(has_text="isn't late")).to_have_count(1)
    assert await shown.all_inner_texts() == before
    await expect(page.locator(".wsw-typing")).to_be_hidden()
    assert (await stored(page))["sessionId"] == session
    await say(page, "where is my order now?")  # the same conversation: no new proof needed
    await expect(bot_bubbles(page).filter(has_text=tracking)).to_have_count(2, timeout=REPLY_TIMEOUT_MS)

    held = tracker(assistant["url"], f"widget:{session}", assistant["token"])
    said = [event.get("text") for event in held["events"] if event["event"] == "user"]
    assert said[:3] == ["/order_status", order["order_number"], order["postcode"]]
    assert held["latest_input_channel"] == "widget"
    assert not PAGE_ERRORS[id(page)]


async def test_markup_typed_by_a_shopper_is_shown_as_text_and_runs_nothing(assistant, browser):
    """An <img onerror> typed into the widget is a message, not an element; the bot still answers."""
    page = await open_demo(browser, assistant["url"])
    answers = await bot_bubbles(page).count()
    await say(page, INJECTION)
    await expect(page.locator(".wsw-msg--user .wsw-bubble")).to_have_text([INJECTION])
    await expect(bot_bubbles(page)).not_to_have_count(answers, timeout=REPLY_TIMEOUT_MS)
    assert await page.locator("#wismo-chat-widget img").count() == 0
    assert await page.evaluate("window.__owned") is None
    assert (await stored(page))["messages"][1] == {"from": "user", "text": INJECTION, "buttons": []}


async def test_after_a_handoff_messages_to_the_team_show_no_typing_dots(assistant, browser):
    """A conversation with a person gets no bot answer; the dots go as soon as the message is handled."""
    page = await open_demo(browser, assistant["url"])
    await say(page, "I want to talk to a real person")
    await expect(bot_bubbles(page).last).to_contain_text("passed your conversation", timeout=REPLY_TIMEOUT_MS)
    answers = await bot_bubbles(page).count()
    await say(page, "it's about a missing parcel")
    # Well before the widget's own 30-second give-up on a silent bot.  The dots go on the server's
    # "turn_done", which it sends after whatever the bot said in the turn: the turn is over.
    await expect(page.locator(".wsw-typing")).to_be_hidden(timeout=10_000)
    assert await bot_bubbles(page).count() == answers  # the bot stays silent


async def test_the_running_assistant_refuses_foreign_origins_and_guessable_sessions(assistant):
    """`make run`'s socket.io: evil.example's handshake gets 400; session "1" becomes a random id."""
    assert await handshake(assistant["url"], EVIL_ORIGIN) == "refused 400"
    assert (await handshake(assistant["url"], assistant["url"])).startswith("0{")
    async with Shopper(assistant["url"]) as shopper:
        given = await shopper.session("1")
        assert HEX32.fullmatch(given)
        await shopper.say("hi", given)
        assert "order" in (await shopper.reply(REPLY_TIMEOUT_MS / 1000))["text"]
    page = httpx.get(f"{assistant['url']}/widget/")
    assert page.status_code == 200 and "Wild Sparrow Home" in page.text and 'src="/widget/widget.js"' in page.text
