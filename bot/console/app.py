"""The agent console's web app (Sanic): pages, the JSON API, logins.

Rules every route keeps:

* Nothing but `/health`, `/login` and the page assets answers without a live
  login: pages redirect to `/login`, the API says 401.
* A login is an HttpOnly, SameSite=Strict cookie holding a random token; the
  store keeps its hash (see `bot.agents`).
* Every POST must carry a JSON object with ``Content-Type: application/json``.
  A browser cannot send that from another site without a CORS preflight this
  app never grants, and SameSite=Strict keeps the cookie off cross-site
  requests anyway; requests whose Origin or Sec-Fetch-Site says "another
  site" are refused outright.
* Bad input gets a 4xx with a JSON `error` an agent can read; the store runs
  in worker threads (`asyncio.to_thread`) so the event loop never blocks.
* Every login attempt is committed to the store before its password is
  checked and counted per username and per client address (see
  `accounts.login_wait`); over a limit the answer is 429 with Retry-After,
  unchecked.  A failed login is logged with the username only when it is an
  agent's: people type their password into that field.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable, Coroutine, Dict, Optional, Set, Tuple, TypeVar
from urllib.parse import urlsplit

from sanic import Sanic, response
from sanic.exceptions import SanicException
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.console import accounts, queue, views
from bot.console.rasa import RasaClient, RasaUnavailable
from bot.domain import redaction
from bot.domain.clock import utcnow
from bot.domain.enums import HandoffState
from bot.services.handoff import online_agents, transcript
from bot.store import db

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "wismo_agent"
#: Longest message an agent may send: Messenger's limit, well inside WhatsApp's.
MAX_REPLY_CHARS = 2000
#: Largest request body accepted; a reply is a few kilobytes at most.
MAX_BODY_BYTES = 64 * 1024
#: Failed logins per username within the window before further tries are refused (counted in the store,
#: across processes; the attempt being made counts).  A correct password clears the username's count.
MAX_LOGIN_FAILURES = 10
#: Failed logins per client address within the window, whatever usernames they try: room for several
#: agents behind one office address, not for trying one password on every account.
MAX_LOGIN_FAILURES_PER_ADDRESS = 30
LOGIN_WINDOW_S = 15 * 60
TOO_MANY_ATTEMPTS = "Too many failed attempts. Wait a few minutes and try again."

#: The files behind the pages; nothing else on disk is reachable.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "application/javascript; charset=utf-8",
    "login.js": "application/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

T = TypeVar("T")


class ApiError(Exception):
    """A request the console refuses; becomes ``{"error": message}`` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        """Refuse with `status`, telling the agent `message`."""
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200) -> HTTPResponse:
    """JSON as the standard library writes it (no escaped slashes in messages)."""
    return response.json(body, status=status, dumps=functools.partial(json.dumps, ensure_ascii=False))


def _error(status: int, message: str) -> HTTPResponse:
    return _json({"error": message}, status=status)


def _own_origins(request: Request) -> Set[str]:
    hosts = [request.headers.get("host", "")]
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if forwarded:
        hosts.append(forwarded)
    return {f"{scheme}://{host.lower()}" for host in hosts if host for scheme in ("http", "https")}


def _cross_site(request: Request) -> bool:
    """Whether the browser says this request comes from another site's page."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not sent by browsers on some same-origin requests; SameSite still guards the cookie
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc.lower()}" not in _own_origins(request)


def json_body(request: Request) -> Dict[str, Any]:
    """The request's JSON object.

    Raises:
        ApiError: 415 without ``Content-Type: application/json``, 400 for a
            body that is not a JSON object.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "Send a JSON body with Content-Type: application/json.")
    try:
        data = json.loads(request.body or b"")
    except ValueError:
        raise ApiError(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return data


def message_text(data: Dict[str, Any], field: str = "text", *, required: bool = True) -> Optional[str]:
    """A message typed by an agent, trimmed; None when optional and empty.

    Raises:
        ApiError: 400 when it is missing, not text, empty or too long.
    """
    value = data.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{field}' must be text.")
    value = value.strip()
    if not value:
        if required:
            raise ApiError(400, "Write a message first.")
        return None
    if len(value) > MAX_REPLY_CHARS:
        raise ApiError(400, f"A message may have at most {MAX_REPLY_CHARS} characters (this has {len(value)}).")
    return value


class Console:
    """The app's shared state: settings, the store engine, the Rasa client."""

    def __init__(self, settings: Settings, engine: Optional[Engine] = None,
                 rasa: Optional[RasaClient] = None) -> None:
        """Serve with `settings`; the engine and Rasa client are built on server start unless given."""
        self.settings = settings
        self.engine = engine
        self.rasa = rasa

    async def store(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one committed store transaction, in a worker thread."""
        engine = self.engine
        if engine is None:
            raise ApiError(503, "The console is starting; try again in a moment.")

        def run() -> T:
            with db.session_scope(engine) as session:
                return work(session)

        return await asyncio.to_thread(run)

    def client(self) -> RasaClient:
        """The Rasa API client (opened when the server starts)."""
        if self.rasa is None:
            raise ApiError(503, "The console is starting; try again in a moment.")
        return self.rasa

    async def signed_in(self, request: Request) -> Optional[accounts.SignedIn]:
        """The agent whose login cookie came with `request`, or None (records presence)."""
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        now = utcnow()
        return await self.store(lambda s: accounts.agent_for_token(session=s, token=token, now=now))


def _set_login_cookie(request: Request, reply: HTTPResponse, token: str, max_age: int) -> None:
    reply.cookies[COOKIE] = token
    cookie = reply.cookies[COOKIE]
    cookie["httponly"] = True
    cookie["samesite"] = "Strict"
    cookie["path"] = "/"
    cookie["max-age"] = max_age
    if request.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https":
        cookie["secure"] = True


def _clear_login_cookie(request: Request, reply: HTTPResponse) -> None:
    _set_login_cookie(request, reply, "", 0)


Handler = Callable[..., Coroutine[Any, Any, HTTPResponse]]


def requires_agent(page: bool = False) -> Callable[[Handler], Handler]:
    """Let only logged-in agents through: pages redirect to /login, the API answers 401."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            console: Console = request.app.ctx.console
            agent = await console.signed_in(request)
            if agent is None:
                refused = response.redirect("/login") if page else _error(401, "Log in to the console first.")
                if request.cookies.get(COOKIE):
                    _clear_login_cookie(request, refused)
                return refused
            request.ctx.agent = agent
            return await handler(request, *args, **kwargs)

        return guarded

    return decorate


def _agent_json(agent: accounts.SignedIn) -> Dict[str, Any]:
    return {"id": agent.agent_id, "username": agent.username, "name": agent.display_name}


def create_app(settings: Settings, *, name: str = "agent_console", engine: Optional[Engine] = None) -> Sanic:
    """The console app; the store engine and the Rasa client are opened when the server starts."""
    app = Sanic(name)
    app.config.REQUEST_MAX_SIZE = MAX_BODY_BYTES
    app.config.FALLBACK_ERROR_FORMAT = "json"
    console = Console(settings, engine)
    app.ctx.console = console

    @app.before_server_start
    async def open_resources(app: Sanic, _loop: Any) -> None:
        if console.engine is None:
            console.engine = db.make_engine(settings.database_url)
        if console.rasa is None:
            console.rasa = RasaClient(settings.rasa_api_url, settings.rasa_auth_token)
        await asyncio.to_thread(accounts.warm_up)

    @app.after_server_stop
    async def close_resources(app: Sanic, _loop: Any) -> None:
        if console.rasa is not None:
            await console.rasa.aclose()
        if console.engine is not None:
            console.engine.dispose()

    @app.on_request
    async def refuse_cross_site_writes(request: Request) -> Optional[HTTPResponse]:
        if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_site(request):
            logger.warning("console: refused a %s %s from another site (Origin %r)", request.method, request.path,
                           request.headers.get("origin"))
            return _error(403, "Requests from other sites are not accepted.")
        return None

    @app.on_response
    async def security_headers(request: Request, reply: HTTPResponse) -> None:
        reply.headers.setdefault("X-Content-Type-Options", "nosniff")
        reply.headers.setdefault("Referrer-Policy", "no-referrer")
        reply.headers.setdefault("X-Frame-Options", "DENY")
        reply.headers.setdefault("Cache-Control", "no-store")
        if reply.content_type and reply.content_type.startswith("text/html"):
            reply.headers.setdefault("Content-Security-Policy", PAGE_CSP)

    @app.exception(ApiError)
    async def api_error(request: Request, error: ApiError) -> HTTPResponse:
        return _error(error.status, error.message)

    @app.exception(queue.QueueError)
    async def queue_error(request: Request, error: queue.QueueError) -> HTTPResponse:
        return _error(error.status, str(error))

    @app.exception(RasaUnavailable)
    async def rasa_error(request: Request, error: RasaUnavailable) -> HTTPResponse:
        return _error(502, str(error))

    @app.exception(SQLAlchemyError)
    async def store_error(request: Request, error: SQLAlchemyError) -> HTTPResponse:
        logger.error("console: the store failed on %s %s: %s", request.method, request.path, error)
        return _error(503, "The order store is not available; try again in a moment.")

    @app.exception(SanicException)
    async def http_error(request: Request, error: SanicException) -> HTTPResponse:
        status = getattr(error, "status_code", 500) or 500
        messages = {404: "Not found.", 405: "Method not allowed.", 413: "The request is too large."}
        return _error(status, messages.get(status, str(error) or "Bad request."))

    # --- pages -------------------------------------------------------------------------

    async def page(file: str) -> HTTPResponse:
        return await response.file(STATIC / file, mime_type="text/html; charset=utf-8")

    @app.get("/health")
    async def health(_: Request) -> HTTPResponse:
        return _json({"status": "ok"})

    @app.get("/login")
    async def login_page(request: Request) -> HTTPResponse:
        if await console.signed_in(request) is not None:
            return response.redirect("/")
        return await page("login.html")

    @app.get("/")
    @requires_agent(page=True)
    async def queue_page(request: Request) -> HTTPResponse:
        return await page("console.html")

    @app.get("/assets/<file:str>")
    async def asset(request: Request, file: str) -> HTTPResponse:
        if file not in ASSETS:
            raise ApiError(404, "Not found.")
        return await response.file(STATIC / file, mime_type=ASSETS[file], headers={"Cache-Control": "no-cache"})

    # --- logging in and out ----------------------------------------------------------------

    @app.post("/api/login")
    async def login(request: Request) -> HTTPResponse:
        data = json_body(request)
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username.strip() or not password:
            raise ApiError(400, "Give your username and password.")
        # The address the connection came from (Sanic takes a proxy's header only when configured to).
        address = request.remote_addr or request.ip or "?"
        now, hours, window = utcnow(), settings.agent_session_hours, dt.timedelta(seconds=LOGIN_WINDOW_S)
        # Written and committed before anything is checked: parallel attempts, here or in another console
        # process, count each other.
        attempt = await console.store(lambda s: accounts.record_login_attempt(
            session=s, username=username, address=address, now=now, window=window))
        # What was typed is logged only when it is an agent's username: people type passwords there.
        who = f"agent {accounts.normalise_username(username)!r}" if attempt.known else "an unknown username"
        wait = await console.store(lambda s: accounts.login_wait(
            session=s, attempt=attempt, now=now, window=window, per_user=MAX_LOGIN_FAILURES,
            per_address=MAX_LOGIN_FAILURES_PER_ADDRESS))
        if wait is not None:
            logger.warning("console: too many failed logins for %s or from %s; refused without a check", who,
                           address)
            reply = _error(429, TOO_MANY_ATTEMPTS)
            reply.headers["Retry-After"] = str(wait)
            return reply

        def check(session: Session) -> Optional[Tuple[str, accounts.SignedIn]]:
            agent = accounts.authenticate(session=session, username=username, password=password)
            if agent is None:
                return None
            token = accounts.start_session(session=session, agent=agent, now=now, hours=hours)
            accounts.login_succeeded(session=session, attempt=attempt, now=now, window=window)
            return token, accounts.SignedIn(agent.id, agent.username, agent.display_name)

        found = await console.store(check)
        if found is None:
            logger.info("console: a failed login for %s from %s", who, address)
            raise ApiError(401, "Wrong username or password.")
        token, agent = found
        reply = _json({"agent": _agent_json(agent)})
        _set_login_cookie(request, reply, token, hours * 3600)
        return reply

    @app.post("/api/logout")
    @requires_agent()
    async def logout(request: Request) -> HTTPResponse:
        json_body(request)
        token = request.cookies.get(COOKIE)
        await console.store(lambda s: accounts.end_session(session=s, token=token))
        reply = _json({"ok": True})
        _clear_login_cookie(request, reply)
        return reply

    # --- the queue and conversations -----------------------------------------------------

    @app.get("/api/me")
    @requires_agent()
    async def me(request: Request) -> HTTPResponse:
        return _json({"agent": _agent_json(request.ctx.agent), "shop": settings.shop_name,
                              "timezone": settings.shop_timezone, "max_reply_chars": MAX_REPLY_CHARS})

    @app.get("/api/queue")
    @requires_agent()
    async def api_queue(request: Request) -> HTTPResponse:
        now = utcnow()

        def read(session: Session) -> Dict[str, Any]:
            online = online_agents(session=session, now=now, minutes=settings.agent_online_minutes)
            return {"handoffs": views.list_queue(session=session, now=now),
                    "online": [a.display_name for a in online]}

        found = await console.store(read)
        return _json({"now": now.isoformat(), "agent": _agent_json(request.ctx.agent), **found})

    @app.get("/api/handoffs/<handoff_id:int>")
    @requires_agent()
    async def detail(request: Request, handoff_id: int) -> HTTPResponse:
        now = utcnow()
        found = await console.store(lambda s: views.handoff_detail(session=s, handoff_id=handoff_id,
                                                                    settings=settings, now=now))
        found["mine"] = found["state"] == HandoffState.CLAIMED and found["agent_id"] == request.ctx.agent.agent_id
        try:
            tracker = await console.client().tracker(found["conversation_id"])
        except RasaUnavailable as error:
            found.update(transcript=None, transcript_error=str(error), paused=None)
        else:
            found.update(transcript=transcript(tracker.get("events") or []), paused=bool(tracker.get("paused")),
                         latest_channel=tracker.get("latest_input_channel"))
        return _json({"now": now.isoformat(), "handoff": found})

    @app.post("/api/handoffs/<handoff_id:int>/claim")
    @requires_agent()
    async def claim(request: Request, handoff_id: int) -> HTTPResponse:
        json_body(request)
        agent, now = request.ctx.agent, utcnow()

        def take(session: Session) -> Dict[str, Any]:
            handoff = queue.claim(session=session, handoff_id=handoff_id, agent=agent, now=now)
            return views.describe_handoff(handoff, now, {})

        claimed = await console.store(take)
        claimed["agent_name"] = agent.display_name
        logger.info("console: %s claimed handoff %s", agent.username, handoff_id)
        return _json({"handoff": claimed})

    async def held(request: Request, handoff_id: int) -> str:
        """The conversation id of a handoff the requesting agent holds (else the error why not)."""
        agent = request.ctx.agent
        return await console.store(lambda s: str(queue.require_holder(
            session=s, handoff_id=handoff_id, agent=agent).conversation_id))

    @app.post("/api/handoffs/<handoff_id:int>/reply")
    @requires_agent()
    async def reply(request: Request, handoff_id: int) -> HTTPResponse:
        text = message_text(json_body(request))
        conversation_id = await held(request, handoff_id)
        await console.client().send_reply(conversation_id, str(text), request.ctx.agent.display_name)
        return _json({"ok": True})

    @app.post("/api/handoffs/<handoff_id:int>/resolve")
    @requires_agent()
    async def resolve(request: Request, handoff_id: int) -> HTTPResponse:
        closing = message_text(json_body(request), required=False)
        agent = request.ctx.agent
        conversation_id = await held(request, handoff_id)
        await console.client().resume(conversation_id, closing_line=closing, agent_name=agent.display_name)
        now = utcnow()
        closed = await console.store(lambda s: views.describe_handoff(
            queue.resolve(session=s, handoff_id=handoff_id, agent=agent, now=now,
                           closing_line=closing is not None), now, {}))
        closed["agent_name"] = agent.display_name
        logger.info("console: %s resolved handoff %s", agent.username, handoff_id)
        return _json({"handoff": closed})

    @app.post("/api/handoffs/<handoff_id:int>/hand-back")
    @requires_agent()
    async def hand_back(request: Request, handoff_id: int) -> HTTPResponse:
        json_body(request)
        agent = request.ctx.agent
        conversation_id = await held(request, handoff_id)
        await console.client().resume(conversation_id, greet=True)
        now = utcnow()
        closed = await console.store(lambda s: views.describe_handoff(
            queue.hand_back(session=s, handoff_id=handoff_id, agent=agent, now=now), now, {}))
        closed["agent_name"] = agent.display_name
        logger.info("console: %s handed handoff %s back to the assistant", agent.username, handoff_id)
        return _json({"handoff": closed})

    return app


def serve(settings: Settings) -> int:
    """Run the console on CONSOLE_PORT until interrupted (SIGINT or SIGTERM)."""
    from bot.serving.runner import StartupError, port_in_use

    redaction.install()
    if port_in_use(settings.console_port):
        raise StartupError(
            f"Port {settings.console_port} is already in use, so the agent console cannot start there. "
            f"Stop whatever uses it (`lsof -i :{settings.console_port}` shows it) or set CONSOLE_PORT "
            "to another port in .env.")
    # Sanic logs its own lines; the console's go to stderr in the same shape, without repeating Sanic's.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
    ours = logging.getLogger("bot")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    app = create_app(settings)
    app.run(host=settings.rasa_host, port=settings.console_port, access_log=False, motd=False, workers=1)
    return 0
