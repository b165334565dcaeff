"""What Meta's two messaging webhooks have in common: WhatsApp Cloud API and Messenger.

Both products call a webhook the same way and take answers through the same
Graph API, so the rules for dealing with Meta live here once:

* a ``GET`` subscription handshake that echoes ``hub.challenge`` only for the
  right verify token;
* a ``POST`` whose raw body is signed in ``X-Hub-Signature-256`` with the app
  secret, checked in constant time and refused with 403 when it does not match;
* a quick 200, because Meta re-delivers whatever it did not see acknowledged
  in time, given only once the messages are stored (Meta never sends a message
  again after its 200, so a restart must not lose it), with the turns run
  afterwards, each shopper's messages in order and a re-delivered message
  handled only once (on any replica); messages left unhandled by a restart or
  a crash run when the server starts, and a stopping server answers 503 and
  finishes its running turns;
* a batch with one malformed message answered for the others (only a body that
  is not the channel's shape at all is refused with 400);
* sends that are retried on 429, 5xx, Graph's transient error codes and network
  errors, with exponential backoff, and that never raise into a turn;
* text limits counted in UTF-16 code units, as Meta counts them.

The channel modules keep only what differs: the shape of the webhook bodies and
of the messages sent.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    ClassVar,
    Coroutine,
    Deque,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Set,
    Text,
    Tuple,
    Type,
    TypeVar,
)

import httpx
from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bot.domain.clock import utcnow
from bot.store.db import session_scope
from bot.store.inbox import (
    CLAIM_LEASE,
    Claimed,
    accept_delivery,
    claim_unhandled,
    mark_handled,
    release_claims,
    renew_claims,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bot.config import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE_SCHEME = "sha256"

#: Meta waits about 20 s for a webhook answer and the Graph API is quick: a
#: request that takes longer than this is better retried than waited for.
SEND_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Tries per send, the first one included.
SEND_ATTEMPTS = 4
#: First pause between tries in seconds; it doubles (with as much jitter) up to eight times this.
SEND_BACKOFF = 0.5
#: Longest pause taken for a Retry-After header; a longer one is cut to this,
#: since a shopper is waiting for the answer.
MAX_RETRY_AFTER_S = 10.0
#: How long a stopping server waits for turns that are still running.  A turn
#: cut off after this runs again later (its message is stored unhandled), so this
#: only trades a quicker stop against a possible repeated answer.  The runner
#: gives the Rasa server more than this to stop (bot/serving/runner.py).
DRAIN_TIMEOUT = 15.0
#: Seconds between the rounds that renew this process's claims (well inside
#: the lease, see bot/store/inbox.py) and run messages whose process died.
SWEEP_INTERVAL = 20.0

#: Graph error codes that mean "slow down" or "try again" even on a 4xx: unknown
#: and service errors (1, 2), app, user and page rate limits (4, 17, 32, 613),
#: and WhatsApp's per-second throughput limit (130429).
_TRANSIENT_GRAPH_CODES = frozenset({1, 2, 4, 17, 32, 613, 130429})

#: The answer to a webhook Meta may consider delivered.
ACKNOWLEDGED = "EVENT_RECEIVED"


class ChannelNotConfigured(RasaException):
    """A setting a channel needs is empty; raised at start-up, not at the first message."""


class MalformedWebhook(ValueError):
    """A signed webhook body that is not the shape Meta sends for the channel."""


def require_settings(settings: Settings, fields: Iterable[str], *, channel: str) -> None:
    """Fail fast when settings a channel needs are empty.

    A server that started without them would accept Meta's webhooks and then
    fail every answer, so start-up stops instead, naming every variable to set.

    Args:
        settings: the loaded settings.
        fields: the settings' field names; their variables are the names in upper case.
        channel: the channel's name as a shop owner knows it, for the message.

    Raises:
        ChannelNotConfigured: naming each empty variable.
    """
    missing = [field.upper() for field in fields if not str(getattr(settings, field, "") or "").strip()]
    if missing:
        raise ChannelNotConfigured(f"The {channel} channel needs {', '.join(missing)} (in .env or the environment).")


# --- signatures and the handshake --------------------------------------------------------


def _hmac_sha256(key: str, data: bytes) -> str:
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def signature_is_valid(app_secret: str, body: bytes, header: Optional[str]) -> bool:
    """Whether `header` is Meta's ``X-Hub-Signature-256`` of `body` under the app secret.

    Only SHA-256 is accepted, whatever hash the header names, so a forger
    cannot pick a weaker one; the comparison takes the same time whatever the
    input, so the signature cannot be guessed byte by byte from response
    times; and an unset secret accepts nothing, not even a body "signed" with
    the empty key.
    """
    if not header or not app_secret:
        return False
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != _SIGNATURE_SCHEME or not given:
        return False
    expected = _hmac_sha256(app_secret, body)
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8", "replace"))


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """The proof Graph asks for once "Require App Secret" is on: HMAC-SHA256 of the token."""
    return _hmac_sha256(app_secret, access_token.encode("utf-8"))


def handshake_answer(mode: Optional[str], token: Optional[str], challenge: Optional[str],
                     verify_token: str) -> Tuple[int, str]:
    """Status and text for Meta's subscription check (``GET`` with ``hub.*`` parameters).

    Meta accepts the webhook only when the challenge comes back verbatim, so
    that is the whole success answer.  A request missing a part is malformed
    (400); a wrong token or any mode but "subscribe" is refused alike (403),
    so a caller learns nothing about which part was wrong.
    """
    if not mode or not token or not challenge:
        return 400, "missing hub.mode, hub.verify_token or hub.challenge"
    if mode != "subscribe" or not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        return 403, "verification failed"
    return 200, challenge


# --- text within Meta's limits ------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length as Meta counts it: UTF-16 code units, so most emoji count twice."""
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def _fitting(text: str, limit: int) -> int:
    """How many leading characters of `text` fit in `limit` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def split_text(text: str, limit: int) -> List[str]:
    """`text` in pieces of at most `limit` UTF-16 units, cut at paragraph, line, sentence or word ends.

    A cut is looked for in the second half of what fits, so pieces do not get
    silly short; text with no break there is cut hard.  Nothing but the
    whitespace at the cuts is lost.
    """
    rest = (text or "").strip()
    pieces: List[str] = []
    while rest and _fitting(rest, limit) < len(rest):
        fits = max(_fitting(rest, limit), 1)
        # One character past what fits: a break right after the last one that fits counts.
        window = rest[:fits + 1]
        cut = fits
        for separator in ("\n\n", "\n", ". ", " "):
            at = window.rfind(separator)
            if at >= fits // 2:
                cut = at + len(separator)
                break
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces


def shorten(text: str, limit: int) -> str:
    """`text` on one line in at most `limit` UTF-16 units, ending in an ellipsis when cut.

    Meta would refuse or cut a title over its limit; an ellipsis shows the
    shopper there was more.
    """
    line = " ".join(text.split())
    if _fitting(line, limit) >= len(line):
        return line
    return line[:_fitting(line, limit - 1)].rstrip() + "\u2026"


# --- sending through the Graph API ------------------------------------------------------


def graph_error(answer: httpx.Response) -> Dict[str, Any]:
    """The ``error`` object of a Graph answer, or {} when there is none."""
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def describe_answer(answer: httpx.Response) -> str:
    """A Graph refusal for a log line: status, Graph's code and message."""
    error = graph_error(answer)
    message = error.get("message") or answer.text[:200]
    return f"HTTP {answer.status_code}, code {error.get('code')}: {message}"


def describe_error(error: BaseException) -> str:
    """A network failure for a log line."""
    detail = str(error)
    return f"{error.__class__.__name__}: {detail}" if detail else error.__class__.__name__


def retryable(outcome: Any) -> bool:
    """Whether another try may succeed where this answer or exception failed.

    Rate limits (429), Meta's own failures (5xx), 4xx answers Graph marks as
    transient and network errors are retried; any other refusal would only
    be repeated, so it is not.
    """
    if isinstance(outcome, BaseException):
        return isinstance(outcome, httpx.TransportError)
    if not isinstance(outcome, httpx.Response):
        return False
    if outcome.status_code == 429 or outcome.status_code >= 500:
        return True
    if outcome.status_code >= 400:
        error = graph_error(outcome)
        return bool(error.get("is_transient")) or error.get("code") in _TRANSIENT_GRAPH_CODES
    return False


def retry_after(answer: httpx.Response) -> Optional[float]:
    """The pause a ``Retry-After`` header asks for in seconds, at most MAX_RETRY_AFTER_S.

    None when there is no usable header (an HTTP date is not honoured: Graph
    sends seconds), and the usual backoff applies.
    """
    try:
        seconds = float(answer.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if seconds >= 0 else None


class GraphClient:
    """Posts to Meta's Graph API with explicit timeouts and retries.

    Holds no conversation state: one serves every shopper, in a webhook turn
    or outside one (a person answering from a console).

    Args:
        client: a shared ``httpx.AsyncClient``; by default one is made on first
            use and closed by :meth:`aclose`.
        timeout: per request, unless a call gives its own.
        attempts: tries per request, the first one included.
        backoff: first pause between tries in seconds.
    """

    def __init__(self, *, client: Optional[httpx.AsyncClient] = None, timeout: httpx.Timeout = SEND_TIMEOUT,
                 attempts: int = SEND_ATTEMPTS, backoff: float = SEND_BACKOFF) -> None:
        self._client = client
        self._owns_client = client is None
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._backoff = wait_exponential_jitter(multiplier=backoff, max=backoff * 8, jitter=backoff)

    def http(self) -> httpx.AsyncClient:
        """The HTTP client, made on first use so nothing is built at import or start-up."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this instance made it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    def _pause(self, state: RetryCallState) -> float:
        """The answer's Retry-After when it gives one, exponential backoff otherwise."""
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            asked = retry_after(outcome.result())
            if asked is not None:
                return asked
        return self._backoff(state)

    async def post(self, url: str, *, body: Mapping[str, Any], headers: Mapping[str, str],
                   params: Optional[Mapping[str, str]] = None, attempts: Optional[int] = None,
                   timeout: Optional[httpx.Timeout] = None, log: logging.Logger = logger,
                   what: str = "a Graph API call") -> httpx.Response:
        """POST `body` (as JSON) to `url`, trying again while :func:`retryable` says so.

        Args:
            url: the Graph endpoint.
            body: the request body.
            headers: sent with every try (the access token goes here, never in the URL).
            params: query parameters such as ``appsecret_proof``.
            attempts: tries for this call (1 for something cosmetic); the client's by default.
            timeout: for this call; the client's by default.
            log: where a retry is logged, so the line carries the channel's logger.
            what: the send as a log line names it, e.g. "whatsapp: sending a text to …5678".

        Returns:
            Graph's last answer, which may still be a refusal: the caller decides
            how to report it.

        Raises:
            httpx.HTTPError: Graph could not be reached on the last try.
        """
        tries = max(1, attempts or self.attempts)

        def before_retry(state: RetryCallState) -> None:
            outcome = state.outcome
            if outcome is None:
                return
            error = outcome.exception()
            reason = describe_error(error) if error is not None else describe_answer(outcome.result())
            log.warning("%s failed (%s), try %d of %d; trying again", what, reason, state.attempt_number, tries)

        def last_outcome(state: RetryCallState) -> Any:
            # Out of tries: hand back the last answer, or raise the last network error.
            return state.outcome.result() if state.outcome is not None else None

        async def once() -> httpx.Response:
            return await self.http().post(url, json=dict(body), headers=dict(headers),
                                          params=dict(params) if params else None,
                                          timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)

        retrying = AsyncRetrying(stop=stop_after_attempt(tries), wait=self._pause,
                                 retry=retry_if_exception(retryable) | retry_if_result(retryable),
                                 before_sleep=before_retry, retry_error_callback=last_outcome)
        answer: httpx.Response = await retrying(once)
        return answer


# --- the webhook ------------------------------------------------------------------------


class Delivery(Protocol):
    """What the shared webhook handling needs to know of one incoming message."""

    @property
    def shopper_id(self) -> str:
        """Whom the turn is for; one shopper's messages are handled in order."""

    @property
    def delivery_id(self) -> str:
        """What a re-delivery of the same message repeats, so it is handled once."""

    def to_json(self) -> Dict[str, Any]:
        """The message as JSON, stored so its turn can run again after a restart."""


D = TypeVar("D", bound=Delivery)
T = TypeVar("T")


def by_shopper(deliveries: Iterable[D]) -> List[List[D]]:
    """Messages grouped per shopper, each group in arrival order, groups in order of first message."""
    groups: Dict[str, List[D]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.shopper_id, []).append(delivery)
    return list(groups.values())


def delivery_from_json(cls: Type[T], data: Any) -> T:
    """Rebuild a channel's delivery dataclass (all fields text or None) from its stored JSON.

    Keys the class does not know are ignored, so a message stored by an older
    release still runs after an upgrade that added an optional field.

    Raises:
        ValueError: the JSON is not an object of text values, or lacks a required field.
    """
    if not isinstance(data, Mapping) or not dataclasses.is_dataclass(cls):
        raise ValueError("the stored message is not a JSON object")
    values = {field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data}
    if not all(value is None or isinstance(value, str) for value in values.values()):
        raise ValueError("a stored message field is not text")
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(str(error)) from None


@dataclasses.dataclass(frozen=True)
class Held(Generic[D]):
    """A message this process has claimed in the store: its row and what it says."""

    row_id: int
    delivery: D

    @property
    def shopper_id(self) -> str:
        return self.delivery.shopper_id

    @property
    def delivery_id(self) -> str:
        return self.delivery.delivery_id


class MetaWebhookInput(InputChannel, Generic[D]):
    """Meta's webhook contract, for a channel that reads its bodies and runs its turns.

    Serves, under the channel's prefix, ``GET /`` (health), ``GET /webhook``
    (the subscription handshake) and ``POST /webhook``: signature checked
    (403), body read (400 only when it is not the channel's shape at the top
    level, never a 500; a single bad message is skipped and logged), the new
    messages stored, and only then 200.  Meta sends nothing again once it has
    its 200, so a message must survive this process: it is written to
    ``channel_deliveries`` with what its turn needs, claimed by this process,
    and marked handled only after its turn ran.  When the store cannot be
    written the answer is 503, and Meta delivers the body again later.

    Turns run afterwards in one task per shopper, that shopper's messages in
    order, each message once (the store's unique key decides, on any replica).

    When the server starts, and every :attr:`sweep_interval` seconds after,
    the channel renews the claims of the messages it holds and claims the
    messages left unhandled (by a restart, or a crashed replica whose claims
    ran out), so each is run once, even with several replicas starting at once.

    When the server stops it answers new webhooks with 503 (Meta retries
    them), lets the running turns finish for up to :attr:`drain_timeout`
    seconds, and gives back the claims of messages it did not start, so the
    next process runs them at once.

    A subclass sets :attr:`CHANNEL_NAME` and provides :meth:`deliveries` (the
    messages of a body), :meth:`delivery_from_json` (a stored message back) and
    :meth:`run_turn` (what one message does), and closes its HTTP clients in
    :meth:`aclose`.

    Args:
        verify_token: the token typed into the Meta app's webhook settings;
            Meta repeats it in the subscription handshake.
        app_secret: the Meta app's secret, which signs every webhook body.
        engine: the store that keeps the messages (the configured one by default).
        lease: how long a claim keeps other processes off a message without being renewed.
        sweep_interval: seconds between renewing claims and looking for abandoned messages.
        drain_timeout: seconds a stopping server waits for running turns.
    """

    #: Rasa serves the channel under /webhooks/<CHANNEL_NAME>/; its log lines start with it.
    CHANNEL_NAME: ClassVar[str] = ""

    def __init__(self, *, verify_token: str, app_secret: str, engine: Optional[Engine] = None,
                 lease: dt.timedelta = CLAIM_LEASE, sweep_interval: float = SWEEP_INTERVAL,
                 drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self.verify_token = verify_token
        self.app_secret = app_secret
        self.engine = engine
        self.lease = lease
        self.sweep_interval = sweep_interval
        self.drain_timeout = drain_timeout
        # asyncio keeps only weak references to tasks: hold the running turns here.
        self._tasks: Set[asyncio.Task[None]] = set()
        #: Row id -> claimed_at of every message this process holds and has not marked handled.
        self._claims: Dict[int, dt.datetime] = {}
        #: Rows whose turn is running right now.
        self._running: Set[int] = set()
        #: Rows whose turn ran but could not be marked handled yet (the sweep tries again).
        self._unmarked: Set[int] = set()
        #: Each shopper's messages waiting for their turn, served by one task per shopper.
        self._queues: Dict[str, Deque[Held[D]]] = {}
        self._on_new_message: Optional[Callable[[UserMessage], Awaitable[Any]]] = None
        self._receiving = 0
        self._draining = False
        self._stopped = False
        self._sweeper: Optional[asyncio.Task[None]] = None
        self._wake: Optional[asyncio.Event] = None

    @classmethod
    def name(cls) -> Text:
        return cls.CHANNEL_NAME

    def deliveries(self, payload: Any) -> List[D]:
        """The messages of a webhook body that start a turn, in the order Meta sent them.

        Raises:
            MalformedWebhook: the body is not the channel's shape (answered with 400).
        """
        raise NotImplementedError

    def delivery_from_json(self, data: Any) -> D:
        """A stored message (what its ``to_json`` gave) back as a delivery.

        Raises:
            ValueError: the stored JSON is not such a message.
        """
        raise NotImplementedError

    async def run_turn(self, delivery: D, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Handle one message seen for the first time (a failure is logged by the caller)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the channel holds (its HTTP clients) when the server stops."""

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """The routes under /webhooks/<channel>/: health, the handshake, the webhook.

        Its listeners run the messages left unhandled once the server is up
        (the Rasa agent is loaded by then), and drain the turns when it stops.
        """
        hook = Blueprint(f"{self.name()}_webhook", __name__)
        self._on_new_message = on_new_message

        @hook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @hook.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            return self._verify(request)

        @hook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self._receive(request)

        @hook.listener("after_server_start")
        async def recover(*_: Any) -> None:
            self.start()

        @hook.listener("before_server_stop")
        async def drain(*_: Any) -> None:
            await self.drain()

        @hook.listener("after_server_stop")
        async def close(*_: Any) -> None:
            await self.aclose()

        return hook

    def _verify(self, request: Request) -> HTTPResponse:
        channel = self.name()
        status, text = handshake_answer(request.args.get("hub.mode"), request.args.get("hub.verify_token"),
                                        request.args.get("hub.challenge"), self.verify_token)
        if status == 403:
            # The setting is named after the channel, like every channel setting.
            logger.warning("%s: webhook verification refused; %s_VERIFY_TOKEN must be the verify token typed "
                           "into the Meta app's webhook settings", channel, channel.upper())
        elif status != 200:
            logger.warning("%s: webhook verification refused: %s", channel, text)
        else:
            logger.info("%s: webhook subscription verified", channel)
        return response.text(text, status=status)

    async def _receive(self, request: Request) -> HTTPResponse:
        """Check, read and store a webhook's messages; 200 only once they are stored."""
        channel = self.name()
        body: bytes = request.body or b""
        header = request.headers.get(SIGNATURE_HEADER)
        if not signature_is_valid(self.app_secret, body, header):
            logger.warning("%s: refused a webhook from %s: %s", channel, request.ip,
                           f"{SIGNATURE_HEADER} does not match the body" if header else f"no {SIGNATURE_HEADER} header")
            return response.text("invalid signature", status=403)
        if self._draining:
            # Accepting now could leave the message to a process that is going away: Meta tries again.
            logger.info("%s: stopping; answered a webhook with 503 so Meta delivers it again", channel)
            return response.text("stopping, deliver again later", status=503, headers={"Retry-After": "30"})
        try:
            payload = json.loads(body)
        except ValueError:  # UnicodeDecodeError included
            logger.warning("%s: refused a signed webhook: body is not JSON (%d bytes)", channel, len(body))
            return response.text("malformed webhook body", status=400)
        try:
            found = self.deliveries(payload)
        except MalformedWebhook as error:
            logger.warning("%s: refused a signed webhook: %s", channel, error)
            return response.text("malformed webhook body", status=400)
        if not found:
            return response.text(ACKNOWLEDGED)
        self._receiving += 1  # drain() waits for this webhook's turns too
        try:
            try:
                accepted = await asyncio.to_thread(self._accept, found)
            except Exception:  # noqa: BLE001 - whatever failed, Meta must deliver the body again
                logger.exception("%s: could not store %d message(s) of a webhook; answered 503 so Meta delivers "
                                 "them again", channel, len(found))
                return response.text("could not store the messages, deliver again later", status=503)
            for claim, _ in accepted:
                self._claims[claim.row_id] = claim.claimed_at
            self._enqueue([Held(claim.row_id, delivery) for claim, delivery in accepted])
        finally:
            self._receiving -= 1
        return response.text(ACKNOWLEDGED)

    def _accept(self, found: Sequence[D]) -> List[Tuple[Claimed, D]]:
        """Store the messages seen for the first time, claimed by this process (in a worker thread).

        One transaction: either every new message of the body is stored, or
        none is and the webhook gets a 503.
        """
        accepted: List[Tuple[Claimed, D]] = []
        now = utcnow()
        with session_scope(self.engine) as session:
            for delivery in found:
                held = accept_delivery(session=session, channel=self.name(), message_id=delivery.delivery_id,
                                       payload=delivery.to_json(), now=now)
                if held is None:
                    logger.info("%s: %s was delivered before; not handled again", self.name(), delivery.delivery_id)
                else:
                    accepted.append((held, delivery))
        return accepted

    # --- running the turns ---------------------------------------------------------------

    def _enqueue(self, items: Iterable[Held[D]]) -> None:
        """Queue messages behind their shopper's earlier ones; start a worker for a shopper without one."""
        for item in items:
            queue = self._queues.get(item.shopper_id)
            if queue is None:
                queue = self._queues[item.shopper_id] = collections.deque([item])
                self._hold(self._work(item.shopper_id, queue))
            else:
                queue.append(item)

    def _hold(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, shopper_id: str, queue: Deque[Held[D]]) -> None:
        """Run one shopper's queued messages in order until the queue is empty."""
        try:
            while queue:
                await self._run(queue.popleft())
        finally:
            # No await since the queue was last seen empty: nothing was added in between.
            if self._queues.get(shopper_id) is queue:
                del self._queues[shopper_id]
            # Cancelled with messages still queued: they are not renewed any more, so once their
            # claims lapse a sweep (here or on another replica) runs them.
            for item in queue:
                self._claims.pop(item.row_id, None)

    async def _run(self, item: Held[D]) -> None:
        """Run one message's turn and mark it handled, also when it failed (it is not tried again)."""
        if self._stopped or item.row_id not in self._claims:
            # Stopping (its claim is given back) or another process took it over: not run here.
            return
        on_new_message = self._on_new_message
        if on_new_message is None:
            raise RuntimeError("the channel's blueprint was not made, so there is no handler for its turns")
        self._running.add(item.row_id)
        try:
            try:
                await self.run_turn(item.delivery, on_new_message)
            except Exception:  # noqa: BLE001 - one failed turn must not take the shopper's next ones with it
                logger.exception("%s: handling %s failed; it is not tried again", self.name(), item.delivery_id)
        finally:
            self._running.discard(item.row_id)
        # Not reached when the turn was cancelled: the message stays unhandled and runs again.
        await self._mark_handled([item.row_id])

    async def _mark_handled(self, row_ids: Iterable[int]) -> None:
        """Record the turns as run; a failure is logged and tried again by the next sweep."""
        ids = list(row_ids)

        def mark() -> None:
            with session_scope(self.engine) as session:
                mark_handled(session=session, row_ids=ids)

        try:
            await asyncio.to_thread(mark)
        except Exception:  # noqa: BLE001 - the claim is kept and renewed, so nobody runs them again meanwhile
            logger.exception("%s: could not mark %d message(s) handled; trying again later", self.name(), len(ids))
            self._unmarked.update(ids)
            return
        for row_id in ids:
            self._unmarked.discard(row_id)
            self._claims.pop(row_id, None)

    # --- start-up, the sweep and stopping ----------------------------------------------------

    def start(self) -> None:
        """Start the sweep; its first round runs at once and picks up what a restart left unhandled."""
        if self._sweeper is None or self._sweeper.done():
            self._draining = self._stopped = False
            self._wake = asyncio.Event()
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while not self._draining:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the store may be back next round
                logger.exception("%s: could not look for messages left unhandled; trying again in %.0f s",
                                 self.name(), self.sweep_interval)
            if self._wake is None:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_interval)
            except asyncio.TimeoutError:
                pass

    async def sweep(self) -> int:
        """One round: mark what could not be marked, renew this process's claims, run abandoned messages.

        Returns:
            how many messages were claimed and queued in this round.
        """
        channel = self.name()
        if self._unmarked:
            await self._mark_handled(set(self._unmarked))
        held = dict(self._claims)
        if held:
            def renew() -> Dict[int, dt.datetime]:
                with session_scope(self.engine) as session:
                    return renew_claims(session=session, claims=held)

            renewed = await asyncio.to_thread(renew)
            for row_id in held:
                if row_id not in self._claims:
                    continue  # handled meanwhile
                if row_id in renewed:
                    self._claims[row_id] = renewed[row_id]
                else:
                    self._claims.pop(row_id, None)
                    self._unmarked.discard(row_id)
                    logger.warning("%s: another process took over message row %d after its claim lapsed",
                                   channel, row_id)
        if self._draining:
            return 0
        skip = set(self._claims)

        def claim() -> List[Claimed]:
            with session_scope(self.engine) as session:
                return claim_unhandled(session=session, channel=channel, lease=self.lease, skip=skip)

        claimed = await asyncio.to_thread(claim)
        if not claimed:
            return 0
        items: List[Held[D]] = []
        unreadable: List[int] = []
        for found in claimed:
            self._claims[found.row_id] = found.claimed_at
            try:
                items.append(Held(found.row_id, self.delivery_from_json(found.payload)))
            except ValueError as error:
                logger.error("%s: message %s left unhandled cannot be run (%s); marked handled",
                             channel, found.message_id, error)
                unreadable.append(found.row_id)
        if unreadable:
            await self._mark_handled(unreadable)
        if items:
            logger.info("%s: running %d message(s) left unhandled", channel, len(items))
            self._enqueue(items)
        return len(claimed)

    @property
    def draining(self) -> bool:
        """Whether the server is stopping (new webhooks get 503)."""
        return self._draining

    async def drain(self, timeout: Optional[float] = None) -> None:
        """Stop taking messages, let the running turns finish, give back the claims of the others.

        Called when the server stops.  New webhooks get 503 from now on, so Meta
        delivers them again (to another replica, or to this one once it is
        back).  Turns still running after `timeout` seconds keep their claim:
        they are run again once it lapses, as after a crash; messages that did
        not start are given back at once.
        """
        self._draining = True
        if self._wake is not None:
            self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.drain_timeout if timeout is None else timeout)
        if self._sweeper is not None and not self._sweeper.done():
            await asyncio.wait({self._sweeper}, timeout=max(0.0, deadline - loop.time()))
        while True:
            pending = {task for task in self._tasks if not task.done()}
            remaining = deadline - loop.time()
            if (not pending and not self._receiving) or remaining <= 0:
                break
            if pending:
                await asyncio.wait(pending, timeout=remaining)
            else:
                await asyncio.sleep(min(0.05, remaining))
        self._stopped = True
        if self._unmarked:
            await self._mark_handled(set(self._unmarked))
        if self._running:
            logger.warning("%s: %d turn(s) still running after %.0f s; they run again once their claim lapses",
                           self.name(), len(self._running), self.drain_timeout if timeout is None else timeout)
        waiting = {row_id: at for row_id, at in self._claims.items()
                   if row_id not in self._running and row_id not in self._unmarked}
        if waiting:
            def give_back() -> int:
                with session_scope(self.engine) as session:
                    return release_claims(session=session, claims=waiting)

            try:
                released = await asyncio.to_thread(give_back)
            except Exception:  # noqa: BLE001 - they are run once their claims lapse instead
                logger.exception("%s: could not give back %d message(s); they run once their claims lapse",
                                 self.name(), len(waiting))
            else:
                logger.info("%s: %d message(s) not started are left for the next start", self.name(), released)
                for row_id in waiting:
                    self._claims.pop(row_id, None)
