"""The site chat widget's channel: Rasa's socket.io channel, hardened, plus the widget's files.

A shop embeds the widget with one script tag (``/widget/widget.js``); the
widget talks to this channel over socket.io.  Rasa's own ``SocketIOInput`` is
the skeleton, with three weaknesses fixed:

* It builds ``AsyncServer(cors_allowed_origins=[])``, which switches
  python-engineio's origin check off, so any web page could open a
  conversation from a visitor's browser.  Here the server accepts only the
  shop's origins (``WIDGET_ORIGINS``) and its own (the demo page).
* It joins whatever session id a client asks for, and takes the session id of
  every message from the message itself.  Whoever knows or guesses an id ("1")
  reads and writes that conversation.  Here a session id must be 128 random
  bits in the widget's format (anything else is replaced by a fresh one), and
  each connection is bound to the one session it was confirmed for.
* With python-socketio 5.x it never enters the session's room (it calls the
  coroutine ``enter_room`` without awaiting it), so replies sent to a session
  reach no one.

The server speaks the websocket transport only.  Browsers apply no CORS to
websockets (the origin check above is what protects them), so long-polling's
CORS headers, which would collide with the ones Rasa's sanic-cors adds for
``RASA_CORS_ORIGINS``, never come into play.

Scaled out, a shopper's widget is connected to one Rasa replica while the
agent console's reply may be handled by another.  With ``WIDGET_REDIS_URL``
set, the replicas share the sessions' rooms through one Redis pub/sub channel
(python-socketio's ``AsyncRedisManager``): a message sent to a session on any
replica reaches its widgets on every replica.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import secrets
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Text, Tuple
from urllib.parse import urlsplit

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.core.channels.socketio import SocketBlueprint, SocketIOInput, SocketIOOutput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncRedisManager, AsyncServer

from bot.config import DEFAULT_WIDGET_REDIS_CHANNEL, REDIS_CHANNEL, get_settings, redis_url_problem
from bot.domain.clock import utcnow
from bot.services import updates
from bot.store import db
from connectors import scoped, unscoped

logger = logging.getLogger(__name__)

#: Sent to the connection after each of its messages has been handled.
TURN_DONE_EVT = "turn_done"
#: The widget confirms it showed proactive updates: ``{"ids": [...]}``.
UPDATE_SEEN_EVT = "update_seen"
#: The channel's name, and the prefix of its conversation ids.
CHANNEL = "widget"

#: The widget's own files (source in git) and its one npm dependency (installed by `make setup`).
WIDGET_DIR = Path(__file__).resolve().parent.parent / "widget"
SOCKETIO_CLIENT = Path("node_modules") / "socket.io-client" / "dist" / "socket.io.min.js"

#: A session id as the widget makes them: 128 random bits, lower-case hex.
SESSION_ID = re.compile(r"[0-9a-f]{32}")
#: Longer messages are refused; the widget's input stops at 1,000 characters.
MAX_MESSAGE_CHARS = 2000
#: Largest websocket frame accepted, in bytes; a chat message is far below it.
MAX_FRAME_BYTES = 64 * 1024

USER_EVENT = "user_uttered"
BOT_EVENT = "bot_uttered"
SOCKETIO_PATH = "/socket.io"

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: What credentials.yml may set for the widget channel (each overrides WIDGET_REDIS_URL / _CHANNEL).
CREDENTIAL_KEYS = ("redis_url", "redis_channel")
#: How long a message waits for Redis before the other replicas' widgets are given up on for it.
PUBLISH_TIMEOUT_S = 2.0
#: Idle seconds, probe interval and probes before a silently dead Redis connection is closed (and
#: before a NAT or load balancer would drop an idle pub/sub connection).
KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}


def normalise_origin(origin: str) -> Optional[str]:
    """``scheme://host[:port]`` in lower case without a default port, or None if it is not an origin.

    Browsers send ``https://shop.example``, a setting may say
    ``https://Shop.example:443``; both must compare equal.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class OriginPolicy:
    """Which web pages may open a socket.io connection: the shop's origins and the server's own.

    python-engineio calls it with the ``Origin`` header of every handshake
    (browsers always send one with a websocket) and refuses the connection
    with 400 when it returns False.
    """

    def __init__(self, origins: Iterable[str]) -> None:
        """Keep the configured origins; ``*`` allows every origin."""
        configured = [origin.strip() for origin in origins if origin.strip()]
        self.any_origin = "*" in configured
        self.origins = frozenset(filter(None, (normalise_origin(o) for o in configured if o != "*")))

    def own_origins(self, environ: Mapping[str, Any]) -> List[str]:
        """The server's own origin, as the request reached it (directly or through a proxy)."""
        hosts = [environ.get("HTTP_HOST", "")]
        forwarded = str(environ.get("HTTP_X_FORWARDED_HOST", "")).split(",")[0].strip()
        if forwarded:
            hosts.append(forwarded)
        own = []
        for host in filter(None, hosts):
            for scheme in ("http", "https"):
                origin = normalise_origin(f"{scheme}://{host}")
                if origin:
                    own.append(origin)
        return own

    def __call__(self, origin: Optional[str], environ: Mapping[str, Any]) -> bool:
        """Whether a page from `origin` may connect."""
        if self.any_origin:
            return True
        normal = normalise_origin(origin or "")
        if normal is None:
            return False
        allowed = normal in self.origins or normal in self.own_origins(environ)
        if not allowed:
            logger.warning("Refused a widget connection from origin %r (not in WIDGET_ORIGINS).", origin)
        return allowed


def new_session_id() -> str:
    """A fresh session id: 128 bits from the operating system's CSPRNG."""
    return secrets.token_hex(16)


def accepted_session_id(requested: Any) -> Tuple[str, bool]:
    """The session id to confirm for a request, and whether it is the one asked for.

    Only ids in the widget's random format are honoured; anything else (a
    guessable "1", another channel's sender id, a non-string) gets a new one.
    """
    if isinstance(requested, str) and SESSION_ID.fullmatch(requested):
        return requested, True
    return new_session_id(), False


def _is_user_message(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("message"), str) and bool(data["message"].strip())


def shown_redis_url(url: str) -> str:
    """`url` with its password replaced, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def redis_options(url: str) -> Dict[str, Any]:
    """Connection options: a connect timeout, so an unreachable Redis cannot hold a reply, and TCP keepalive.

    The pub/sub connection sits idle between messages.  Without keepalive, a
    connection dropped silently (a NAT's idle timeout, a Redis host that
    vanished) would leave the replica listening to nothing for good; with it
    the connection fails and python-socketio subscribes again.  No read
    timeout: the listener's read waits for the next message for as long as it
    takes, and a timeout there would drop the subscription every few seconds.
    """
    options: Dict[str, Any] = {"socket_connect_timeout": PUBLISH_TIMEOUT_S}
    if urlsplit(url).scheme != "unix":
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = {getattr(socket, name): value for name, value in KEEPALIVE.items()
                                               if hasattr(socket, name)}
    return options


class SharedRooms(AsyncRedisManager):
    """The sessions' rooms, shared by every replica through one Redis pub/sub channel.

    python-socketio hands a message to this replica's own sockets first and
    then publishes it for the others, giving up (and logging) after two failed
    attempts, so a Redis that is down costs the other replicas' widgets that
    message and nothing more.  A Redis that takes connections but does not
    answer would hold the publish, and with it the conversation's turn, for as
    long as TCP waits: the publish is bounded here.
    """

    async def _publish(self, data: Any) -> Any:
        try:
            return await asyncio.wait_for(super()._publish(data), PUBLISH_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("Redis took no widget message within %.0f s; widgets on other replicas miss it.",
                         PUBLISH_TIMEOUT_S)
            return None


class WidgetOutput(SocketIOOutput):
    """Sends the bot's messages to every open widget of one session (its socket.io room)."""

    @classmethod
    def name(cls) -> Text:
        """The channel's name, as recorded in the tracker."""
        return "widget"

    def __init__(self, sio: AsyncServer) -> None:
        """Send through `sio`, the running socket.io server."""
        super().__init__(sio, BOT_EVENT)

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        """Send `text`; a reply from a person in the agent console carries their name."""
        agent = kwargs.get("agent")
        for part in text.strip().split("\n\n"):
            message: Dict[Text, Any] = {"text": part}
            if isinstance(agent, str) and agent.strip():
                message["agent"] = agent.strip()[:80]
            await self._send_message(recipient_id, message)

    async def send_custom_json(self, recipient_id: Text, json_message: Dict[Text, Any], **kwargs: Any) -> None:
        """Pass a custom payload on as data; Rasa's version spreads it into ``emit``'s arguments."""
        await self._send_message(recipient_id, {"custom": json_message})

    async def _send_message(self, socket_id: Text, response: Any) -> None:
        # Rasa addresses the conversation ("widget:<session>"); the socket.io room is the bare session id.
        await super()._send_message(unscoped(CHANNEL, socket_id), response)


class UpdateOutput(WidgetOutput):
    """Sends one proactive update; each message carries its id, which an open widget confirms (``update_seen``)."""

    def __init__(self, sio: AsyncServer, notification_id: int) -> None:
        super().__init__(sio)
        self.notification_id = notification_id

    async def _send_message(self, socket_id: Text, response: Any) -> None:
        if isinstance(response, dict):
            response = {**response, "update": self.notification_id}
        await super()._send_message(socket_id, response)


def _update_messages(notification_id: int, messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """An update's stored messages as the widget's ``bot_uttered`` payloads, marked with the update's id."""
    out = []
    for message in messages:
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            continue
        payload: Dict[str, Any] = {"text": text, "update": notification_id}
        if isinstance(message.get("buttons"), list):
            payload["quick_replies"] = message["buttons"]
        out.append(payload)
    return out


class WidgetInput(SocketIOInput):
    """The site widget's socket.io channel, and the routes serving the widget and a demo shop page."""

    @classmethod
    def name(cls) -> Text:
        """The channel's name (``latest_input_channel`` in the tracker)."""
        return "widget"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        """Build the channel from the settings, and the shared rooms' Redis from credentials.yml if it names one.

        ``redis_url`` and ``redis_channel`` in credentials.yml override
        ``WIDGET_REDIS_URL`` and ``WIDGET_REDIS_CHANNEL``; an empty value
        leaves the setting in force.  Any other key would suggest a setting
        that is silently ignored, so it stops the server instead; the allowed
        origins come from ``WIDGET_ORIGINS``.
        """
        given = dict(credentials or {})
        unknown = [str(key) for key in given if key not in CREDENTIAL_KEYS]
        if unknown:
            raise ValueError(
                f"The widget channel takes only {' and '.join(CREDENTIAL_KEYS)} in credentials.yml "
                f"(got {', '.join(unknown)}); set the allowed origins with WIDGET_ORIGINS."
            )
        for key, value in given.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} of the widget channel in credentials.yml must be a string.")
        redis_url = (given.get("redis_url") or "").strip()
        redis_channel = (given.get("redis_channel") or "").strip()
        problem = redis_url_problem(redis_url) if redis_url else None
        if problem:  # the reason, never the URL: it may hold a password
            raise ValueError(f"redis_url of the widget channel in credentials.yml is not a Redis URL: {problem}.")
        if redis_channel and not REDIS_CHANNEL.fullmatch(redis_channel):
            raise ValueError("redis_channel of the widget channel in credentials.yml: "
                             "letters, digits and . _ : - only (at most 100), e.g. wismo-widget.")
        settings = get_settings()
        redis_url = redis_url or settings.widget_redis_url
        redis_channel = redis_channel or settings.widget_redis_channel
        return cls(origins=settings.widget_origin_list, shop_name=settings.shop_name, redis_url=redis_url,
                   redis_channel=redis_channel)

    def __init__(self, origins: Sequence[str] = (), shop_name: str = "Wild Sparrow Home",
                 widget_dir: Path = WIDGET_DIR, redis_url: str = "",
                 redis_channel: str = DEFAULT_WIDGET_REDIS_CHANNEL) -> None:
        """Accept connections from `origins` (and the server's own); `shop_name` titles the demo page.

        With `redis_url`, the sessions' rooms are shared with every replica
        using the same Redis and `redis_channel`; without, they stay in this process.
        """
        super().__init__(user_message_evt=USER_EVENT, bot_message_evt=BOT_EVENT, session_persistence=True,
                         socketio_path=SOCKETIO_PATH)
        self.origin_policy = OriginPolicy(origins)
        self.shop_name = shop_name
        self.widget_dir = widget_dir
        self.redis_url = redis_url
        self.redis_channel = redis_channel
        self._bundle: Optional[Tuple[Tuple[float, float], bytes]] = None
        self._sessions: Optional[Any] = None

    def url_prefix(self) -> Text:
        """Serve the widget's routes at ``/widget/...`` rather than under ``/webhooks/``."""
        return "/widget"

    def get_output_channel(self) -> Optional[OutputChannel]:
        """The output channel for messages sent outside a shopper's turn (an agent's reply, say).

        It reaches the session's widgets on this replica, and on every other
        one when the rooms are shared through Redis.
        """
        if self.sio is None:
            return None
        return WidgetOutput(self.sio)

    # --- proactive updates ------------------------------------------------------------

    def _store(self, work: Callable[[Any], Any]) -> Awaitable[Any]:
        if self._sessions is None:
            self._sessions = db.session_factory()

        def run() -> Any:
            assert self._sessions is not None
            with self._sessions() as session, session.begin():
                return work(session)
        return asyncio.to_thread(run)

    async def _replay_updates(self, sio: AsyncServer, sid: Text, session_id: Text) -> None:
        """Send a newly opened widget the updates sent while no page of its session was open."""
        try:
            pending = await self._store(lambda session: updates.unseen_for(
                session=session, conversation_id=scoped(CHANNEL, session_id)))
        except Exception:  # noqa: BLE001 - the store may be down: the widget works without its updates
            logger.exception("Could not look up the proactive updates waiting for a widget session.")
            return
        for notification_id, messages in pending:
            for payload in _update_messages(notification_id, messages):
                await sio.emit(BOT_EVENT, payload, room=sid, ignore_queue=True)

    # --- the widget's files ----------------------------------------------------------

    def widget_bundle(self) -> Optional[bytes]:
        """widget.js with the socket.io client inside its own scope, or None if the client is missing.

        The client is the UMD build from npm.  Run inside a function whose
        ``globalThis``, ``define``, ``exports`` and ``module`` are shadowed, it
        leaves its export on a private object: the shop's page gets no global
        ``io``, and a page with an AMD loader does not swallow it.  Rebuilt when
        either file changes.
        """
        client = self.widget_dir / SOCKETIO_CLIENT
        source = self.widget_dir / "widget.js"
        try:
            stamp = (client.stat().st_mtime, source.stat().st_mtime)
        except FileNotFoundError:
            return None
        if self._bundle is None or self._bundle[0] != stamp:
            library = re.sub(r"^//# sourceMappingURL=.*$", "", client.read_text(encoding="utf-8"), flags=re.M)
            bundle = "\n".join([
                "/* Site chat widget. Includes the Socket.IO client (MIT licence, socket.io-client on npm). */",
                "(function () {",
                "var lib = {};",
                "(function (globalThis, define, exports, module) {",
                library,
                "}).call(lib, lib);",
                "var io = lib.io;",
                source.read_text(encoding="utf-8"),
                "})();",
                "",
            ])
            self._bundle = (stamp, bundle.encode("utf-8"))
        return self._bundle[1]

    def demo_page(self, nonce: str) -> str:
        """The demo shop page, named after the shop, with the widget embedded."""
        template = (self.widget_dir / "demo.html").read_text(encoding="utf-8")
        # In a script element only "<" can end it early ("</script>", "<!--"): escape it in the JSON.
        name_js = json.dumps(self.shop_name).replace("<", "\\u003c")
        return (template.replace("{{ shop_name_js }}", name_js)
                .replace("{{ shop_name }}", html.escape(self.shop_name))
                .replace("{{ nonce }}", nonce))

    # --- routes and socket.io events -------------------------------------------------

    def client_manager(self) -> Optional[SharedRooms]:
        """The rooms shared through Redis, or None to keep them in this process.

        Nothing connects here: python-socketio connects on the first publish
        and subscribes when the first widget connects, and keeps retrying
        while Redis is unreachable.
        """
        if not self.redis_url:
            return None
        logger.info("Widget rooms are shared through Redis at %s on channel %s.",
                    shown_redis_url(self.redis_url), self.redis_channel)
        return SharedRooms(self.redis_url, channel=self.redis_channel, logger=logger,
                           redis_options=redis_options(self.redis_url))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """The widget's routes and the socket.io server attached to the app."""
        sio = AsyncServer(
            client_manager=self.client_manager(),
            async_mode="sanic",
            cors_allowed_origins=self.origin_policy,
            cors_credentials=False,
            transports=["websocket"],
            max_http_buffer_size=MAX_FRAME_BYTES,
        )
        self.sio = sio
        widget = SocketBlueprint(sio, self.socketio_path, "widget", __name__)
        self._add_file_routes(widget)
        self._add_socket_events(sio, on_new_message)
        return widget

    def _add_file_routes(self, widget: Blueprint) -> None:
        static_headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}

        @widget.route("/health", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @widget.route("/", methods=["GET"])
        async def demo(_: Request) -> HTTPResponse:
            nonce = secrets.token_urlsafe(16)
            csp = (f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
                   "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                   "frame-ancestors 'none'")
            page = await asyncio.to_thread(self.demo_page, nonce)
            return response.html(page, headers={
                "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

        @widget.route("/widget.js", methods=["GET"])
        async def script(_: Request) -> HTTPResponse:
            bundle = await asyncio.to_thread(self.widget_bundle)  # file reads stay off the event loop
            if bundle is None:
                logger.error("The widget cannot be served: %s is missing; run `make setup` (it needs npm).",
                             self.widget_dir / SOCKETIO_CLIENT)
                return response.text("The chat widget is not installed on this server.", status=503)
            return response.raw(bundle, content_type="application/javascript; charset=utf-8",
                                headers=static_headers)

        @widget.route("/widget.css", methods=["GET"])
        async def stylesheet(_: Request) -> HTTPResponse:
            return await response.file(self.widget_dir / "widget.css", mime_type="text/css; charset=utf-8",
                                       headers=static_headers)

    def _add_socket_events(self, sio: AsyncServer, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        @sio.on("connect")
        async def connect(sid: Text, environ: Dict, auth: Optional[Dict] = None) -> bool:
            logger.debug("Widget connection %s from %s.", sid, environ.get("HTTP_ORIGIN", "no origin"))
            return True

        @sio.on("session_request")
        async def session_request(sid: Text, data: Any) -> None:
            requested = data.get("session_id") if isinstance(data, dict) else None
            session_id, honoured = accepted_session_id(requested)
            if requested is not None and not honoured:
                logger.warning("Widget connection %s asked for a session id not in the widget's format; "
                               "gave it a new one.", sid)
            async with sio.session(sid) as state:
                previous = state.get("session_id")
                state["session_id"] = session_id
            if previous and previous != session_id:
                await sio.leave_room(sid, previous)
            await sio.enter_room(sid, session_id)
            # Addressed to this connection, which is on this replica: no need to publish it.
            await sio.emit("session_confirm", session_id, room=sid, ignore_queue=True)
            await self._replay_updates(sio, sid, session_id)

        @sio.on(UPDATE_SEEN_EVT)
        async def update_seen(sid: Text, data: Any) -> None:
            session_id = (await sio.get_session(sid)).get("session_id")
            ids = data.get("ids") if isinstance(data, dict) else None
            if session_id is None or not isinstance(ids, list):
                return
            wanted = ids[:50]  # mark_seen keeps only real ids of this conversation's own updates
            if wanted:
                # Only this session's own updates can be confirmed: the conversation comes from the connection.
                await self._store(lambda session: updates.mark_seen(
                    session=session, conversation_id=scoped(CHANNEL, session_id), notification_ids=wanted,
                    now=utcnow()))

        @sio.on(self.user_message_evt)
        async def user_uttered(sid: Text, data: Any) -> None:
            session_id = (await sio.get_session(sid)).get("session_id")
            if session_id is None:
                logger.warning("Widget connection %s sent a message before its session was confirmed; ignored.", sid)
                return
            if not _is_user_message(data):
                logger.warning("Widget connection %s sent a message without text; ignored.", sid)
                return
            claimed = data.get("session_id")
            if claimed is not None and claimed != session_id:
                logger.warning("Widget connection %s sent a message for another session; ignored.", sid)
                return
            text = data["message"]
            if len(text) > MAX_MESSAGE_CHARS:
                logger.warning("Widget connection %s sent %d characters (limit %d); ignored.",
                               sid, len(text), MAX_MESSAGE_CHARS)
                return
            message = UserMessage(text, WidgetOutput(sio), scoped(CHANNEL, session_id), input_channel=self.name())
            try:
                await on_new_message(message)
            finally:
                # The turn is over, answered or not (a conversation handed to a
                # person gets no bot answer): the widget stops its typing dots.
                await sio.emit(TURN_DONE_EVT, room=sid, ignore_queue=True)
