"""Facebook Messenger: the webhook Meta calls with a Page's messages, and the Send API.

Rasa ships a Facebook channel, but it cannot be put in front of shoppers as it
is: it trusts the legacy SHA-1 signature (and lets the header pick the hash),
compares signatures with ``==``, answers a forged request with 200, drops every
event of a batch but the first, and answers Meta only after the whole turn, so a
slow turn is delivered again and runs twice.  This channel keeps Rasa's shape
(an :class:`InputChannel` with a blueprint, small ``_is_<kind>`` predicates and
an :class:`OutputChannel`) and fixes those points with what it shares with the
WhatsApp channel (:mod:`connectors.meta`): only a valid ``X-Hub-Signature-256``
gets in, Meta gets its 200 at once, every message of a batch is handled once
(even across replicas and restarts) and in order per sender, and replies are
retried on 429, 5xx and network errors, a reply that still cannot be sent
being logged while the conversation carries on.  What is Messenger's own:

* every event of every entry is read; text, quick-reply payloads and postbacks
  start a turn, echoes and delivery/read receipts do not, and a photo gets a
  note asking for text;
* a postback without a message id is still recognised when re-delivered;
* buttons go out as quick replies, with a typing indicator while a turn runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, Optional, Text, Union

import httpx
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage

from connectors import TEXT_ONLY_NOTE, scoped, unscoped
from connectors.meta import (
    SEND_ATTEMPTS,
    SEND_BACKOFF,
    SEND_TIMEOUT,
    ChannelNotConfigured,
    GraphClient,
    MalformedWebhook,
    MetaWebhookInput,
    appsecret_proof,
    delivery_from_json,
    describe_answer,
    describe_error,
    require_settings,
    retryable,
    shorten,
    split_text,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bot.config import Settings

logger = logging.getLogger(__name__)

#: The channel's name: Rasa serves it under /webhooks/messenger/.
CHANNEL = "messenger"

#: Meta's limits for what the Send API accepts (text counted in UTF-16 units).
TEXT_LIMIT = 2000
QUICK_REPLY_LIMIT = 13
QUICK_REPLY_TITLE_LIMIT = 20
QUICK_REPLY_PAYLOAD_LIMIT = 1000

#: A typing indicator is worth one short try, no more.
ACTION_TIMEOUT = httpx.Timeout(3.0)

#: What the webhook needs; the sender alone needs only the last two.
_INPUT_SETTINGS = ("messenger_verify_token", "messenger_app_secret", "messenger_page_access_token",
                   "messenger_api_base_url")
_OUTPUT_SETTINGS = _INPUT_SETTINGS[2:]


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

    @property
    def shopper_id(self) -> str:
        """The sender's PSID: their events are handled in order."""
        return self.sender_id

    def to_json(self) -> Dict[str, Any]:
        """The event as stored before Meta gets its 200, to run its turn again after a restart."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Inbound:
        """An event stored by :meth:`to_json`.

        Raises:
            ValueError: `data` is not such an event.
        """
        event = delivery_from_json(cls, data)
        if not event.sender_id or not event.kind or not event.delivery_id or event.text is None:
            raise ValueError("the stored event has no sender, type, id or text")
        return event


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
        MalformedWebhook: when the body is not a Page webhook at all (not an
            object, another product's, or without a list of entries).  An entry
            or event that cannot be used is skipped with a log line instead, so
            one odd event does not make Meta re-deliver the whole batch, the
            good events with it, for days.
    """
    if not isinstance(payload, dict):
        raise MalformedWebhook("the body is not a JSON object")
    if payload.get("object") != "page":
        raise MalformedWebhook(f"object is {payload.get('object')!r}, not 'page'")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise MalformedWebhook("entry is not a list")
    found: List[Inbound] = []
    for e, entry in enumerate(entries):
        if not isinstance(entry, dict):
            logger.warning("messenger: skipped entry[%d] of a webhook: not an object", e)
            continue
        events = entry.get("messaging")
        if events is None:
            continue  # "standby" (another app owns the thread) or other fields
        if not isinstance(events, list):
            logger.warning("messenger: skipped entry[%d] of a webhook: messaging is not a list", e)
            continue
        page_id = _id(entry.get("id"))
        for m, event in enumerate(events):
            if not isinstance(event, dict):
                logger.warning("messenger: skipped entry[%d].messaging[%d] of a webhook: not an object", e, m)
                continue
            inbound = _inbound(event, page_id)
            if inbound is not None:
                found.append(inbound)
    return found


# --- what goes out ----------------------------------------------------------------------


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
        replies.append({"content_type": "text", "title": shorten(title, QUICK_REPLY_TITLE_LIMIT),
                        "payload": payload})
    return replies


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
            raise ChannelNotConfigured("MESSENGER_PAGE_ACCESS_TOKEN is not set")
        super().__init__()
        self._token = page_access_token
        self._url = api_base_url.rstrip("/") + "/me/messages"
        self._params = {"appsecret_proof": appsecret_proof(app_secret, page_access_token)} if app_secret else {}
        self._graph = GraphClient(client=client, timeout=timeout, attempts=attempts, backoff=backoff)
        self.messaging_type = messaging_type
        self.tag = tag
        #: Messages (not typing indicators) Graph accepted through this instance.
        self.sent = 0
        #: Requests Graph still refused after every try.
        self.failed = 0

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_settings(cls, settings: Settings, *, client: Optional[httpx.AsyncClient] = None,
                      **options: Any) -> MessengerOutput:
        """An output for the configured Page, from the settings alone.

        Raises:
            ChannelNotConfigured: when the page access token or the API's URL is not set.
        """
        require_settings(settings, _OUTPUT_SETTINGS, channel="Messenger")
        return cls(page_access_token=settings.messenger_page_access_token,
                   api_base_url=settings.messenger_api_base_url,
                   app_secret=settings.messenger_app_secret or None, client=client, **options)

    async def __aenter__(self) -> MessengerOutput:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this output made it."""
        await self._graph.aclose()

    # Rasa's OutputChannel interface ------------------------------------------------------

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        """Send `text`, in as many messages as Messenger's length limit needs."""
        for piece in split_text(text, TEXT_LIMIT):
            await self.send_message(recipient_id, {"text": piece})

    async def send_text_with_buttons(self, recipient_id: Text, text: Text, buttons: List[Dict[Text, Any]],
                                     **kwargs: Any) -> None:
        """Send `text` with the buttons as quick replies under its last piece.

        Quick replies rather than a button template: they take 13 choices where a
        template takes 3, and the shopper's tap shows in the thread as their answer.
        """
        replies = quick_replies(buttons)
        pieces = split_text(text, TEXT_LIMIT)
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

    async def send_utility_template(self, recipient_id: Text, template_name: str, language: str,
                                    parameters: List[str]) -> bool:
        """Send an approved utility message template (outside the 24-hour window); True when Graph accepted it."""
        body: Dict[str, Any] = {
            "recipient": {"id": recipient_id}, "messaging_type": "UTILITY",
            "message": {"attachment": {"type": "template", "payload": {
                "template_type": "utility", "template_name": template_name, "language": language,
                "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in parameters]}],
            }}},
        }
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

    async def _post(self, body: Dict[str, Any], *, attempts: Optional[int] = None,
                    timeout: Optional[httpx.Timeout] = None) -> bool:
        """POST `body` to /me/messages with retries; False (and a log line) when it failed for good."""
        if isinstance(body.get("recipient"), dict) and body["recipient"].get("id"):
            # Rasa addresses the conversation; the Send API wants the bare page-scoped id.
            body = {**body, "recipient": {**body["recipient"], "id": unscoped(CHANNEL, str(body["recipient"]["id"]))}}
        recipient = body.get("recipient", {}).get("id")
        tries = attempts or self._graph.attempts
        try:
            reply = await self._graph.post(self._url, params=self._params, body=body,
                                           headers={"Authorization": f"Bearer {self._token}"}, attempts=tries,
                                           timeout=timeout, log=logger, what=f"messenger: sending to {recipient}")
        except httpx.HTTPError as exc:
            self.failed += 1
            logger.error("messenger: could not reach the Send API for %s (%d %s): %s", recipient, tries,
                         "try" if tries == 1 else "tries", describe_error(exc))
            return False
        if reply.is_error:
            self.failed += 1
            # A refusal worth retrying was retried until the tries ran out.
            retried = f" ({tries} {'try' if tries == 1 else 'tries'})" if retryable(reply) else ""
            logger.error("messenger: the Send API refused a message to %s%s: %s", recipient, retried,
                         describe_answer(reply))
            return False
        return True


# --- the channel ------------------------------------------------------------------------


class MessengerInput(MetaWebhookInput[Inbound]):
    """The webhook for a Facebook Page's Messenger conversations.

    Args:
        verify_token: the token typed into the app's webhook settings; Meta
            repeats it in the subscription handshake.
        app_secret: the app's secret; every POST must be signed with it.
        page_access_token: the Page's token, for the replies.
        api_base_url: Graph's base URL with the version.
        engine: the store that keeps the messages (the configured one by default).
        typing_indicator: show "typing..." while a turn runs.
        options: lease, sweep interval and drain timeout, see :class:`MetaWebhookInput`.
    """

    CHANNEL_NAME = CHANNEL

    def __init__(self, *, verify_token: str, app_secret: str, page_access_token: str, api_base_url: str,
                 engine: Optional[Engine] = None, typing_indicator: bool = True, **options: Any) -> None:
        super().__init__(verify_token=verify_token, app_secret=app_secret, engine=engine, **options)
        self.page_access_token = page_access_token
        self.api_base_url = api_base_url
        self.typing_indicator = typing_indicator
        self._client: Optional[httpx.AsyncClient] = None

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        """Build the channel from the settings (.env); credentials.yml holds no secrets.

        Raises:
            ChannelNotConfigured: naming every MESSENGER_* variable that is empty.
        """
        from bot.config import get_settings

        if credentials:
            logger.warning("messenger: settings in the credentials file are ignored; "
                           "set MESSENGER_* in the environment or .env")
        return cls.from_settings(get_settings())

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> MessengerInput:
        """The channel for the configured Page; fails at start-up when a secret is missing."""
        require_settings(settings, _INPUT_SETTINGS, channel="Messenger")
        return cls(verify_token=settings.messenger_verify_token, app_secret=settings.messenger_app_secret,
                   page_access_token=settings.messenger_page_access_token,
                   api_base_url=settings.messenger_api_base_url, **options)

    def get_output_channel(self) -> MessengerOutput:
        """An output for messages not prompted by a webhook (Rasa's trigger_intent, a console)."""
        return self._output()

    def _output(self) -> MessengerOutput:
        # A fresh output per turn (it counts what it sent), all on one HTTP client.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT)
        return MessengerOutput(page_access_token=self.page_access_token, api_base_url=self.api_base_url,
                               app_secret=self.app_secret, client=self._client)

    def deliveries(self, payload: Any) -> List[Inbound]:
        """The body's events that need a turn.

        Raises:
            MalformedWebhook: the body is not a Page webhook.
        """
        return parse_webhook(payload)

    def delivery_from_json(self, data: Any) -> Inbound:
        """An event stored before a restart, to run its turn now."""
        return Inbound.from_json(data)

    async def aclose(self) -> None:
        """Close the shared HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run_turn(self, event: Inbound, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Answer one event, with the typing indicator on while the assistant works on it."""
        output = self._output()
        if event.kind == "attachment":
            await output.send_text_message(event.sender_id, TEXT_ONLY_NOTE)
            return
        if self.typing_indicator:
            await output.send_typing(event.sender_id)
        message = UserMessage(event.text, output, scoped(CHANNEL, event.sender_id), input_channel=CHANNEL,
                              message_id=event.message_id, metadata={"page_id": event.page_id, "kind": event.kind})
        try:
            await on_new_message(message)
        finally:
            if self.typing_indicator and output.sent == 0:
                await output.send_action(event.sender_id, "typing_off")
