"""Facebook Messenger: the webhook Meta calls with a Page's messages, and the Send API.

Rasa ships a Facebook channel, but it cannot be put in front of shoppers as it
is: it trusts the legacy SHA-1 signature (and lets the header pick the hash),
compares signatures with ``==``, answers a forged request with 200, drops every
event of a batch but the first, and answers Meta only after the whole turn, so a
slow turn is delivered again and runs twice.  This channel keeps Rasa's shape
(an :class:`InputChannel` with a blueprint, small ``_is_<kind>`` predicates and
an :class:`OutputChannel`) and fixes those points:

* only ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the app
  secret) is accepted, compared in constant time; anything else gets a 403;
* every event of every entry is read; text, quick-reply payloads and postbacks
  start a turn, echoes and delivery/read receipts do not;
* Meta gets its 200 at once and the turns run afterwards, one task per sender
  so a sender's messages keep their order;
* re-deliveries are recognised by the store (:func:`bot.inbox.first_delivery`),
  so a message is answered once even across replicas and restarts;
* replies go out through ``httpx`` with explicit timeouts and retries on 429,
  5xx and network errors; a reply that still cannot be sent is logged and the
  conversation carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    Iterable,
    List,
    Optional,
    Set,
    Text,
    Union,
)

import httpx
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

if TYPE_CHECKING:  # imported lazily: nothing is read or built at import time
    from sqlalchemy.engine import Engine

    from bot.config import Settings

from connectors import TEXT_ONLY_NOTE

logger = logging.getLogger(__name__)

#: The channel's name: Rasa serves it under /webhooks/messenger/.
CHANNEL = "messenger"

#: Meta's limits for what the Send API accepts.
TEXT_LIMIT = 2000
QUICK_REPLY_LIMIT = 13
QUICK_REPLY_TITLE_LIMIT = 20
QUICK_REPLY_PAYLOAD_LIMIT = 1000

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE_PREFIX = "sha256="

#: Meta waits about 20 s for a webhook answer and the Send API is quick; a
#: request that takes longer than this is better retried than waited for.
SEND_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
SEND_ATTEMPTS = 4
#: A typing indicator is worth one short try, no more.
ACTION_TIMEOUT = httpx.Timeout(3.0)
#: First pause between attempts in seconds; it doubles (with jitter) each time.
SEND_BACKOFF = 0.5

#: Graph error codes that mean "slow down" or "try again" even on a 4xx.
_TRANSIENT_GRAPH_CODES = frozenset({1, 2, 4, 17, 32, 613})
#: How long a stopping server waits for turns that are still running.
_DRAIN_TIMEOUT = 10.0

#: The settings this channel needs, by environment variable.
_REQUIRED = {
    "MESSENGER_VERIFY_TOKEN": "messenger_verify_token",
    "MESSENGER_APP_SECRET": "messenger_app_secret",
    "MESSENGER_PAGE_ACCESS_TOKEN": "messenger_page_access_token",
    "MESSENGER_API_BASE_URL": "messenger_api_base_url",
}


class MessengerNotConfigured(RasaException):
    """A setting the channel needs is empty; raised at start-up, not at the first message."""


class PayloadError(ValueError):
    """The webhook body is JSON but not the shape Meta sends for a Page."""


# --- signatures -------------------------------------------------------------------------


def expected_signature(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends with `body`."""
    digest = hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _SIGNATURE_PREFIX + digest


def signature_matches(*, app_secret: str, body: bytes, header: Optional[str]) -> bool:
    """Whether `header` is the SHA-256 signature of `body` with the app secret.

    The hash is fixed to SHA-256 (a header claiming another algorithm is simply
    wrong), and the comparison takes the same time whatever the input, so the
    signature cannot be guessed byte by byte from response times.
    """
    if not header or not app_secret:
        return False
    given = header.strip()
    if not given.lower().startswith(_SIGNATURE_PREFIX):
        return False
    given = _SIGNATURE_PREFIX + given[len(_SIGNATURE_PREFIX):].lower()
    return hmac.compare_digest(expected_signature(app_secret, body).encode("ascii"),
                               given.encode("utf-8", "replace"))


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """The proof Graph asks for when the app requires it: HMAC-SHA256 of the token."""
    return hmac.new(app_secret.encode("utf-8"), access_token.encode("utf-8"), hashlib.sha256).hexdigest()


# --- what arrives -----------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """One event from a shopper that starts a turn.

    Attributes:
        sender_id: the shopper's page-scoped id (PSID); replies go to it.
        text: what the bot reads: the typed text, or the payload of the tapped
            quick reply or button.
        kind: "text", "quick_reply" or "postback".
        delivery_id: what a re-delivery of this same event repeats (the mid, or
            for a postback without one, sender + timestamp + payload).
        message_id: Meta's mid when the event has one.
        page_id: the Page the shopper wrote to.
    """

    sender_id: str
    text: str
    kind: str
    delivery_id: str
    message_id: Optional[str]
    page_id: Optional[str]


def _message(event: Dict[str, Any]) -> Dict[str, Any]:
    value = event.get("message")
    return value if isinstance(value, dict) else {}


def _postback(event: Dict[str, Any]) -> Dict[str, Any]:
    value = event.get("postback")
    return value if isinstance(value, dict) else {}


def _is_echo(event: Dict[str, Any]) -> bool:
    """A message the Page itself sent (our replies, or a person's from the inbox)."""
    return bool(_message(event).get("is_echo"))


def _is_receipt(event: Dict[str, Any]) -> bool:
    """A delivery or read receipt: the shopper's phone reporting, not the shopper."""
    return "delivery" in event or "read" in event


def _is_quick_reply(event: Dict[str, Any]) -> bool:
    """A tapped quick reply: the payload, not the shown title, is what the bot reads."""
    quick_reply = _message(event).get("quick_reply")
    return isinstance(quick_reply, dict) and _nonempty_str(quick_reply.get("payload"))


def _is_text_message(event: Dict[str, Any]) -> bool:
    """A typed message (attachments-only messages, stickers and likes carry no text)."""
    return _nonempty_str(_message(event).get("text"))


def _is_attachment_only(event: Dict[str, Any]) -> bool:
    """A message carrying only attachments (photo, audio, sticker, location ...)."""
    attachments = _message(event).get("attachments")
    return isinstance(attachments, list) and bool(attachments)


def _is_postback(event: Dict[str, Any]) -> bool:
    """A tapped button, Get Started or persistent-menu item."""
    return _nonempty_str(_postback(event).get("payload"))


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _id(value: Any) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


def _fallback_delivery_id(kind: str, sender_id: str, event: Dict[str, Any], content: str) -> str:
    # Meta repeats the same event on re-delivery, timestamp included; two taps
    # of the same button are different timestamps.
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:32]
    return f"{kind}:{sender_id}:{event.get('timestamp')}:{digest}"


def _inbound(event: Dict[str, Any], page_id: Optional[str]) -> Optional[Inbound]:
    """The turn an event asks for, or None for events that need no answer."""
    if _is_echo(event) or _is_receipt(event):
        return None
    sender = event.get("sender")
    sender_id = _id(sender.get("id")) if isinstance(sender, dict) else None
    if _is_quick_reply(event):
        kind, text, mid = "quick_reply", _message(event)["quick_reply"]["payload"], _message(event).get("mid")
    elif _is_text_message(event):
        kind, text, mid = "text", _message(event)["text"], _message(event).get("mid")
    elif _is_postback(event):
        kind, text, mid = "postback", _postback(event)["payload"], _postback(event).get("mid")
    elif _is_attachment_only(event):
        # A photo of a damaged parcel, a voice note, a sticker: the shopper
        # expects an answer, so they hear that only text is read.
        kind, text, mid = "attachment", "", _message(event).get("mid")
    else:
        logger.info("messenger: ignored an event without text or payload (keys: %s)", sorted(event))
        return None
    if sender_id is None:
        # The chat plugin's user_ref senders cannot be answered by PSID.
        logger.warning("messenger: ignored a %s without sender.id", kind)
        return None
    message_id = _id(mid)
    delivery_id = message_id or _fallback_delivery_id(kind, sender_id, event, text)
    return Inbound(sender_id=sender_id, text=text, kind=kind, delivery_id=delivery_id,
                   message_id=message_id, page_id=page_id)


def parse_webhook(payload: Any) -> List[Inbound]:
    """Every event of every entry that needs a turn, in the order Meta sent them.

    Raises:
        PayloadError: when the body is not a Page webhook at all; single events
            that cannot be used are skipped (with a log line) instead, so one
            odd event does not make Meta re-deliver the whole batch forever.
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    if payload.get("object") != "page":
        raise PayloadError(f"object is {payload.get('object')!r}, not 'page'")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError("entry is not a list")
    found: List[Inbound] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PayloadError("an entry is not an object")
        events = entry.get("messaging")
        if events is None:
            continue  # "standby" (another app owns the thread) or other fields
        if not isinstance(events, list):
            raise PayloadError("entry.messaging is not a list")
        page_id = _id(entry.get("id"))
        for event in events:
            if not isinstance(event, dict):
                logger.warning("messenger: skipped a messaging event that is not an object")
                continue
            inbound = _inbound(event, page_id)
            if inbound is not None:
                found.append(inbound)
    return found


def by_sender(events: Iterable[Inbound]) -> List[List[Inbound]]:
    """Events grouped per shopper, each group in arrival order."""
    groups: Dict[str, List[Inbound]] = {}
    for event in events:
        groups.setdefault(event.sender_id, []).append(event)
    return list(groups.values())


# --- what goes out ----------------------------------------------------------------------


def _units(char: str) -> int:
    # Meta counts UTF-16 code units: characters outside the BMP (most emoji) count twice.
    return 2 if ord(char) > 0xFFFF else 1


def _fitting(text: str, limit: int) -> int:
    """How many leading characters of `text` fit in `limit` units."""
    used = 0
    for index, char in enumerate(text):
        used += _units(char)
        if used > limit:
            return index
    return len(text)


def split_text(text: str, limit: int = TEXT_LIMIT) -> List[str]:
    """`text` in pieces Messenger accepts, cut at paragraph, line, sentence or word ends."""
    rest = (text or "").strip()
    pieces: List[str] = []
    while rest and _fitting(rest, limit) < len(rest):
        fits = max(_fitting(rest, limit), 1)
        window = rest[:fits]
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


def _shorten(title: str, limit: int = QUICK_REPLY_TITLE_LIMIT) -> str:
    title = " ".join(title.split())
    if _fitting(title, limit) >= len(title):
        return title
    return title[:_fitting(title, limit - 1)].rstrip() + "\u2026"


def quick_replies(buttons: Iterable[Any]) -> List[Dict[str, str]]:
    """Rasa buttons as Messenger quick replies, within Meta's limits.

    Titles are shortened with an ellipsis (Meta would cut them anyway); a button
    whose payload is too long or missing (a link button) is left out rather than
    sent broken, and at most 13 go out.
    """
    replies: List[Dict[str, str]] = []
    for button in buttons:
        if not isinstance(button, dict):
            continue
        title, payload = str(button.get("title") or "").strip(), button.get("payload")
        payload = "" if payload is None else str(payload)
        if not title or not payload:
            logger.warning("messenger: a button without title or payload cannot be a quick reply")
            continue
        if len(payload) > QUICK_REPLY_PAYLOAD_LIMIT:
            logger.warning("messenger: left out the button %r: payload over %d characters",
                           title, QUICK_REPLY_PAYLOAD_LIMIT)
            continue
        if len(replies) == QUICK_REPLY_LIMIT:
            logger.warning("messenger: more than %d buttons; the rest are left out", QUICK_REPLY_LIMIT)
            break
        replies.append({"content_type": "text", "title": _shorten(title), "payload": payload})
    return replies


class _TransientReply(Exception):
    """Graph answered with something worth retrying (429, 5xx, a transient error code)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _graph_error(response: httpx.Response) -> Dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def _is_transient(response: httpx.Response) -> bool:
    if response.status_code == 429 or response.status_code >= 500:
        return True
    if response.status_code >= 400:
        error = _graph_error(response)
        return bool(error.get("is_transient")) or error.get("code") in _TRANSIENT_GRAPH_CODES
    return False


class MessengerOutput(OutputChannel):
    """Sends the bot's responses to one Page's shoppers through the Send API.

    It needs nothing from a webhook request, so a reply can be sent at any time
    (for instance by a person answering from a console): build it with
    :meth:`from_settings`.  Every send returns normally; a message Graph would
    not take after the retries is logged, so a failed send never ends a turn.

    Args:
        page_access_token: the Page's access token (sent as a Bearer header, so it
            never appears in a URL or an access log).
        api_base_url: Graph's base URL with the version, e.g.
            https://graph.facebook.com/v21.0.
        app_secret: when given, every call carries ``appsecret_proof``, which
            Meta requires once "Require App Secret" is switched on for the app.
        client: a shared ``httpx.AsyncClient``; by default one is made on first
            use and closed by :meth:`aclose`.
        messaging_type: "RESPONSE" for replies within 24 hours of the shopper's
            last message; "MESSAGE_TAG" with ``tag="HUMAN_AGENT"`` for a person's
            reply within 7 days.
        tag: the message tag when ``messaging_type`` is "MESSAGE_TAG".
        attempts: tries per request, the first one included.
        backoff: first pause between tries in seconds.
    """

    def __init__(self, *, page_access_token: str, api_base_url: str, app_secret: Optional[str] = None,
                 client: Optional[httpx.AsyncClient] = None, messaging_type: str = "RESPONSE",
                 tag: Optional[str] = None, attempts: int = SEND_ATTEMPTS, backoff: float = SEND_BACKOFF,
                 timeout: httpx.Timeout = SEND_TIMEOUT) -> None:
        if not page_access_token:
            raise MessengerNotConfigured("MESSENGER_PAGE_ACCESS_TOKEN is not set")
        super().__init__()
        self._token = page_access_token
        self._url = api_base_url.rstrip("/") + "/me/messages"
        self._params = {"appsecret_proof": appsecret_proof(app_secret, page_access_token)} if app_secret else {}
        self._client = client
        self._owns_client = client is None
        self._timeout = timeout
        self.messaging_type = messaging_type
        self.tag = tag
        self.attempts = max(1, attempts)
        self.backoff = backoff
        #: Messages (not typing indicators) Graph accepted through this instance.
        self.sent = 0
        #: Requests Graph still refused after every try.
        self.failed = 0

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_settings(cls, settings: "Settings", *, client: Optional[httpx.AsyncClient] = None,
                      **options: Any) -> "MessengerOutput":
        """An output for the configured Page, from the settings alone.

        Raises:
            MessengerNotConfigured: when the page access token is not set.
        """
        return cls(page_access_token=settings.messenger_page_access_token,
                   api_base_url=settings.messenger_api_base_url,
                   app_secret=settings.messenger_app_secret or None, client=client, **options)

    async def __aenter__(self) -> "MessengerOutput":
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this output made it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # Rasa's OutputChannel interface ------------------------------------------------------

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        """Send `text`, in as many messages as Messenger's length limit needs."""
        for piece in split_text(text):
            await self.send_message(recipient_id, {"text": piece})

    async def send_text_with_buttons(self, recipient_id: Text, text: Text, buttons: List[Dict[Text, Any]],
                                     **kwargs: Any) -> None:
        """Send `text` with the buttons as quick replies under its last piece.

        Quick replies rather than a button template: they take 13 choices where a
        template takes 3, and the shopper's tap shows in the thread as their answer.
        """
        replies = quick_replies(buttons)
        pieces = split_text(text)
        if not pieces:
            logger.warning("messenger: quick replies need a text; sent nothing to %s", recipient_id)
            return
        for piece in pieces[:-1]:
            await self.send_message(recipient_id, {"text": piece})
        message: Dict[str, Any] = {"text": pieces[-1]}
        if replies:
            message["quick_replies"] = replies
        await self.send_message(recipient_id, message)

    async def send_quick_replies(self, recipient_id: Text, text: Text, quick_replies: List[Dict[Text, Any]],
                                 **kwargs: Any) -> None:
        """Rasa's quick replies are buttons by another name here."""
        await self.send_text_with_buttons(recipient_id, text, quick_replies)

    async def send_image_url(self, recipient_id: Text, image: Text, **kwargs: Any) -> None:
        """Send an image by URL; Messenger fetches and shows it."""
        await self.send_message(recipient_id, {"attachment": {"type": "image",
                                                              "payload": {"url": image, "is_reusable": True}}})

    async def send_elements(self, recipient_id: Text, elements: Iterable[Dict[Text, Any]], **kwargs: Any) -> None:
        """Send cards as a generic template; buttons without a type become postbacks."""
        cards = []
        for element in elements:
            card = dict(element)
            if isinstance(card.get("buttons"), list):
                card["buttons"] = [{"type": "postback", **b} if isinstance(b, dict) and "type" not in b else b
                                   for b in card["buttons"]]
            cards.append(card)
        await self.send_message(recipient_id, {"attachment": {"type": "template", "payload": {
            "template_type": "generic", "elements": cards}}})

    async def send_custom_json(self, recipient_id: Text, json_message: Union[List[Any], Dict[Text, Any]],
                               **kwargs: Any) -> None:
        """Pass a response's `custom` part to the Send API.

        A dict with ``message`` or ``sender_action`` is a request body; any other
        dict is the ``message`` itself; a list is sent item by item.  The
        recipient is always the current shopper: a response cannot redirect a
        message to someone else.
        """
        items = json_message if isinstance(json_message, list) else [json_message]
        for item in items:
            if not isinstance(item, dict) or not item:
                logger.warning("messenger: custom response is not a JSON object; not sent")
                continue
            if "message" in item or "sender_action" in item:
                body = {key: value for key, value in item.items() if key not in ("recipient", "sender")}
                body["recipient"] = {"id": recipient_id}
                if "message" in body:
                    body.setdefault("messaging_type", self.messaging_type)
                    if await self._post(body):
                        self.sent += 1
                else:
                    await self._post(body)
            else:
                await self.send_message(recipient_id, item)

    # Send API ---------------------------------------------------------------------------

    async def send_message(self, recipient_id: Text, message: Dict[str, Any]) -> bool:
        """Send one Send API `message` object; True when Graph accepted it."""
        body: Dict[str, Any] = {"recipient": {"id": recipient_id}, "messaging_type": self.messaging_type,
                                "message": message}
        if self.tag:
            body["tag"] = self.tag
        accepted = await self._post(body)
        if accepted:
            self.sent += 1
        return accepted

    async def send_action(self, recipient_id: Text, action: str) -> bool:
        """Send a sender action ("typing_on", "typing_off", "mark_seen").

        One quick try only: an indicator is cosmetic, and retrying it while
        Graph struggles would hold back the answer the shopper is waiting for.
        """
        return await self._post({"recipient": {"id": recipient_id}, "sender_action": action},
                                 attempts=1, timeout=ACTION_TIMEOUT)

    async def send_typing(self, recipient_id: Text) -> bool:
        """Show the typing indicator; Messenger hides it with the next message (or after ~20 s)."""
        return await self.send_action(recipient_id, "typing_on")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _post(self, body: Dict[str, Any], *, attempts: Optional[int] = None,
                    timeout: Optional[httpx.Timeout] = None) -> bool:
        """POST `body` to /me/messages with retries; False (and a log line) when it failed for good."""
        recipient = body.get("recipient", {}).get("id")
        headers = {"Authorization": f"Bearer {self._token}"}
        tries = attempts or self.attempts
        extra: Dict[str, Any] = {"timeout": timeout} if timeout is not None else {}

        def _log_retry(state: RetryCallState) -> None:
            outcome = state.outcome.exception() if state.outcome else None
            logger.warning("messenger: sending to %s failed (%s), try %d of %d", recipient,
                           outcome.__class__.__name__ if isinstance(outcome, httpx.HTTPError) else outcome,
                           state.attempt_number, tries)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(tries),
            wait=wait_exponential_jitter(multiplier=self.backoff, max=self.backoff * 8, jitter=self.backoff),
            retry=retry_if_exception_type((httpx.TransportError, _TransientReply)),
            before_sleep=_log_retry,
            reraise=True,
        )
        reply: httpx.Response
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await self._http().post(self._url, params=self._params, json=body, headers=headers,
                                                    **extra)
                    if _is_transient(reply):
                        raise _TransientReply(reply)
        except _TransientReply as exc:
            self._log_refusal(recipient, exc.response, tries=tries)
            return False
        except httpx.HTTPError as exc:
            self.failed += 1
            logger.error("messenger: could not reach the Send API for %s (%d %s): %s", recipient, tries,
                         "try" if tries == 1 else "tries", exc.__class__.__name__)
            return False
        if reply.status_code >= 400:
            self._log_refusal(recipient, reply, tries=None)
            return False
        return True

    def _log_refusal(self, recipient: Any, reply: httpx.Response, *, tries: Optional[int]) -> None:
        self.failed += 1
        error = _graph_error(reply)
        logger.error("messenger: the Send API refused a message to %s%s: HTTP %d, code %s: %s",
                     recipient, f" ({tries} {'try' if tries == 1 else 'tries'})" if tries else "",
                     reply.status_code, error.get("code"), error.get("message") or reply.text[:200])


# --- the channel ------------------------------------------------------------------------


def _missing_settings(settings: "Settings") -> List[str]:
    return [env for env, field in _REQUIRED.items() if not str(getattr(settings, field, "") or "").strip()]


class MessengerInput(InputChannel):
    """The webhook for a Facebook Page's Messenger conversations.

    Args:
        verify_token: the token typed into the app's webhook settings; Meta
            repeats it in the subscription handshake.
        app_secret: the app's secret; every POST must be signed with it.
        page_access_token: the Page's token, for the replies.
        api_base_url: Graph's base URL with the version.
        engine: the store that remembers delivered message ids (the configured
            one by default).
        typing_indicator: show "typing..." while a turn runs.
    """

    def __init__(self, *, verify_token: str, app_secret: str, page_access_token: str, api_base_url: str,
                 engine: Optional["Engine"] = None, typing_indicator: bool = True) -> None:
        self.verify_token = verify_token
        self.app_secret = app_secret
        self.page_access_token = page_access_token
        self.api_base_url = api_base_url
        self.engine = engine
        self.typing_indicator = typing_indicator
        self._client: Optional[httpx.AsyncClient] = None
        # asyncio keeps only weak references to tasks: hold the running turns here.
        self._tasks: Set["asyncio.Task[None]"] = set()

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        """Build the channel from the settings (.env); credentials.yml holds no secrets.

        Raises:
            MessengerNotConfigured: naming every MESSENGER_* variable that is empty.
        """
        from bot.config import get_settings

        if credentials:
            logger.warning("messenger: settings in the credentials file are ignored; "
                           "set MESSENGER_* in the environment or .env")
        return cls.from_settings(get_settings())

    @classmethod
    def from_settings(cls, settings: "Settings", **options: Any) -> "MessengerInput":
        """The channel for the configured Page; fails at start-up when a secret is missing."""
        missing = _missing_settings(settings)
        if missing:
            raise MessengerNotConfigured(f"The messenger channel needs {', '.join(missing)} (in .env or the "
                                         "environment).")
        return cls(verify_token=settings.messenger_verify_token, app_secret=settings.messenger_app_secret,
                   page_access_token=settings.messenger_page_access_token,
                   api_base_url=settings.messenger_api_base_url, **options)

    def get_output_channel(self) -> MessengerOutput:
        """An output for messages not prompted by a webhook (Rasa's trigger_intent, a console)."""
        return self._output()

    def _output(self) -> MessengerOutput:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT)
        return MessengerOutput(page_access_token=self.page_access_token, api_base_url=self.api_base_url,
                               app_secret=self.app_secret, client=self._client)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """The routes under /webhooks/messenger/: health, the handshake, the webhook."""
        hook = Blueprint("messenger_webhook", __name__)

        @hook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @hook.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            return self._verify(request)

        @hook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return self._receive(request, on_new_message)

        @hook.listener("before_server_stop")
        async def drain(_app: Any, _loop: Any) -> None:
            await self.drain()

        @hook.listener("after_server_stop")
        async def close(_app: Any, _loop: Any) -> None:
            await self.aclose()

        return hook

    # The handlers -------------------------------------------------------------------------

    def _verify(self, request: Request) -> HTTPResponse:
        """Meta's subscription handshake: echo the challenge when the token is ours."""
        mode = request.args.get("hub.mode")
        token = request.args.get("hub.verify_token")
        challenge = request.args.get("hub.challenge")
        if not mode or token is None or not challenge:
            logger.warning("messenger: verify request without hub.mode, hub.verify_token or hub.challenge")
            return response.text("missing hub.mode, hub.verify_token or hub.challenge", status=400)
        if mode != "subscribe":
            logger.warning("messenger: verify request with hub.mode=%r", mode[:40])
            return response.text("hub.mode must be subscribe", status=400)
        if not hmac.compare_digest(token.encode("utf-8"), self.verify_token.encode("utf-8")):
            logger.warning("messenger: verify request with the wrong token; check MESSENGER_VERIFY_TOKEN "
                           "against the app's webhook settings")
            return response.text("wrong verify token", status=403)
        logger.info("messenger: webhook subscription verified")
        return response.text(challenge)

    def _receive(self, request: Request, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> HTTPResponse:
        """Check, read and acknowledge a webhook; the turns run after the 200."""
        body: bytes = request.body or b""
        if not signature_matches(app_secret=self.app_secret, body=body,
                                 header=request.headers.get(SIGNATURE_HEADER)):
            logger.warning("messenger: refused a webhook from %s: %s", request.ip,
                           "bad signature" if request.headers.get(SIGNATURE_HEADER) else
                           f"no {SIGNATURE_HEADER} header")
            return response.text("bad signature", status=403)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            logger.warning("messenger: refused a signed webhook whose body is not JSON (%d bytes)", len(body))
            return response.text("body is not JSON", status=400)
        try:
            events = parse_webhook(payload)
        except PayloadError as exc:
            logger.warning("messenger: refused a signed webhook: %s", exc)
            return response.text(f"not a Page webhook: {exc}", status=400)
        for group in by_sender(events):
            self._spawn(request.app, self._handle(group, on_new_message))
        return response.text("EVENT_RECEIVED")

    def _spawn(self, app: Any, work: Coroutine[Any, Any, None]) -> None:
        if getattr(app, "is_running", False):
            task = app.add_task(work)
        else:  # create_server or ASGI: Sanic's add_task needs app.run, the running loop does not
            task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = _DRAIN_TIMEOUT) -> None:
        """Let the turns that are running finish (used when the server stops)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        """Close the shared HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # A shopper's turns -------------------------------------------------------------------

    async def _handle(self, events: List[Inbound], on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Run one shopper's events of a webhook in order, each once."""
        for event in events:
            try:
                if not await self._first_delivery(event):
                    logger.info("messenger: %s %s was delivered before; not answered again",
                                event.kind, event.delivery_id)
                    continue
                await self._turn(event, on_new_message)
            except Exception:  # noqa: BLE001 - a failed turn must not take the others with it
                logger.exception("messenger: handling a %s from %s failed", event.kind, event.sender_id)

    async def _first_delivery(self, event: Inbound) -> bool:
        """Whether the store sees this delivery for the first time (it records it)."""
        from bot.db import session_scope
        from bot.inbox import first_delivery

        def record() -> bool:
            with session_scope(self.engine) as session:
                return first_delivery(session=session, channel=CHANNEL, message_id=event.delivery_id)

        try:
            return await asyncio.to_thread(record)
        except Exception:  # noqa: BLE001 - answering twice beats not answering
            logger.exception("messenger: could not record delivery %s; answering it anyway", event.delivery_id)
            return True

    async def _turn(self, event: Inbound, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        output = self._output()
        if event.kind == "attachment":
            await output.send_text_message(event.sender_id, TEXT_ONLY_NOTE)
            return
        if self.typing_indicator:
            await output.send_typing(event.sender_id)
        message = UserMessage(event.text, output, event.sender_id, input_channel=CHANNEL,
                              message_id=event.message_id, metadata={"page_id": event.page_id, "kind": event.kind})
        try:
            await on_new_message(message)
        finally:
            if self.typing_indicator and output.sent == 0:
                await output.send_action(event.sender_id, "typing_off")
