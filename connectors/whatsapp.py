"""The WhatsApp channel, over Meta's WhatsApp Cloud API.

Shoppers write to the shop's WhatsApp number; Meta calls the webhook
(`/webhooks/whatsapp/webhook`) with a signed JSON body, and the assistant
answers through the Graph API (`POST {base}/{phone_number_id}/messages`).

The webhook's contract with Meta (the handshake, the signature, the quick 200,
every message of a batch handled once and in order per shopper) and the Graph
API retries are shared with Messenger in :mod:`connectors.meta`.  What is
WhatsApp's own lives here:

* status callbacks and message types the assistant cannot read never start a
  turn; media, locations and the like get a short note asking for text; a
  message (or entry, or change) of the wrong shape is skipped with a log line
  and the rest of the batch is answered;
* messages from a number this channel does not serve are ignored, since the
  answer could not go out from it;
* Rasa buttons become reply buttons (up to three) or a list (up to ten rows),
  whose ids are the payloads, so a tap comes back as what Rasa expects;
* each message is marked read (with a typing indicator) while its turn runs,
  and a send that finally fails is logged instead of breaking the conversation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Text, Tuple, Union

import httpx
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage

from bot.config import CHANNEL_SECRETS, Settings, get_settings
from connectors import TEXT_ONLY_NOTE, scoped, unscoped
from connectors.meta import (
    SEND_ATTEMPTS,
    SEND_BACKOFF,
    GraphClient,
    MalformedWebhook,
    MetaWebhookInput,
    delivery_from_json,
    describe_answer,
    describe_error,
    require_settings,
    shorten,
    split_text,
    utf16_len,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

#: The channel's name: Rasa serves it under /webhooks/whatsapp/.
CHANNEL = "whatsapp"
WEBHOOK_OBJECT = "whatsapp_business_account"

# WhatsApp's limits (Cloud API reference, "messages" and "interactive" objects), in UTF-16 units.
TEXT_LIMIT = 4096
BODY_LIMIT = 1024
MAX_BUTTONS = 3
BUTTON_TITLE_LIMIT = 20
BUTTON_ID_LIMIT = 256
MAX_ROWS = 10
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
ROW_ID_LIMIT = 200
LIST_BUTTON_LABEL = "Choose"

#: Body of an interactive message whose own text had to go out separately.
CHOOSE_PROMPT = "Please choose:"

#: Message types that get TEXT_ONLY_NOTE.  Others (reactions, system notices,
#: ...) are not something a shopper expects an answer to, and are ignored.
ASK_FOR_TEXT = frozenset({"image", "audio", "video", "document", "sticker", "location", "contacts",
                          "order", "interactive", "unsupported"})

_URL = re.compile(r"https?://\S", re.IGNORECASE)


# --- incoming ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """One shopper message from a webhook, reduced to what a turn needs.

    `text` is what the assistant reads (for a tapped button, its payload);
    None means the type cannot be read and the shopper is asked for text.
    """

    message_id: str
    wa_id: str
    text: Optional[str]
    kind: str
    profile_name: Optional[str] = None
    phone_number_id: Optional[str] = None
    timestamp: Optional[str] = None

    @property
    def shopper_id(self) -> str:
        """The sender's WhatsApp id: their messages are handled in order."""
        return self.wa_id

    @property
    def delivery_id(self) -> str:
        """Meta's message id, which a re-delivery repeats."""
        return self.message_id

    def to_json(self) -> Dict[str, Any]:
        """The message as stored before Meta gets its 200, to run its turn again after a restart."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Inbound:
        """A message stored by :meth:`to_json`.

        Raises:
            ValueError: `data` is not such a message.
        """
        message = delivery_from_json(cls, data)
        if not message.message_id or not message.wa_id or not message.kind:
            raise ValueError("the stored message has no id, sender or type")
        return message

    def metadata(self) -> Dict[str, Any]:
        """What the tracker keeps about where the message came from."""
        found = {"channel": CHANNEL, "wa_id": self.wa_id, "message_id": self.message_id, "type": self.kind,
                 "profile_name": self.profile_name, "phone_number_id": self.phone_number_id,
                 "timestamp": self.timestamp}
        return {key: value for key, value in found.items() if value is not None}


def _skip(where: str, reason: str) -> None:
    """Log a part of a webhook that is left out: the rest of the batch is still answered."""
    logger.warning("whatsapp: skipped %s of a webhook: %s", where, reason)


def _part(container: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = container.get(key)
    return value if isinstance(value, Mapping) else {}


def _readable_text(message: Mapping[str, Any]) -> Tuple[str, Optional[str]]:
    """(kind, text) of one message; text None when only a note asking for text fits."""
    kind = str(message.get("type") or "")
    if kind == "text":
        return kind, str(_part(message, "text").get("body") or "")
    if kind == "interactive":
        interactive = _part(message, "interactive")
        sub = str(interactive.get("type") or "")
        if sub in ("button_reply", "list_reply"):
            reply = _part(interactive, sub)
            return sub, str(reply.get("id") or reply.get("title") or "")
        return kind, None
    if kind == "button":  # a quick-reply button of a template message
        button = _part(message, "button")
        return kind, str(button.get("payload") or button.get("text") or "")
    return kind, None


def parse_webhook(payload: Any) -> List[Inbound]:
    """Every shopper message of a webhook body, in the order Meta sent them.

    Status callbacks, other webhook fields and message types nobody expects an
    answer to (reactions, system notices) give nothing.  A part of the body
    that cannot be read (an entry, a change or a message of the wrong shape, a
    message without id or sender) is skipped with a log line: refusing the
    whole body would make Meta deliver its good messages again, with the bad
    one, for days, and none would ever be answered.

    Raises:
        MalformedWebhook: the body itself is not a Cloud API webhook (not an
            object, another product's, or without a list of entries).
    """
    if not isinstance(payload, Mapping):
        raise MalformedWebhook("body is not an object")
    if payload.get("object") != WEBHOOK_OBJECT:
        raise MalformedWebhook(f"object is {payload.get('object')!r}, not {WEBHOOK_OBJECT!r}")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise MalformedWebhook("body.entry is not a list")
    found: List[Inbound] = []
    for e, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            _skip(f"entry[{e}]", "not an object")
            continue
        changes = entry.get("changes")
        if changes is None:
            continue
        if not isinstance(changes, list):
            _skip(f"entry[{e}]", "changes is not a list")
            continue
        for c, change in enumerate(changes):
            where = f"entry[{e}].changes[{c}]"
            if not isinstance(change, Mapping):
                _skip(where, "not an object")
                continue
            if change.get("field") != "messages":
                continue
            value = change.get("value")
            if not isinstance(value, Mapping):
                _skip(where, "value is not an object")
                continue
            found.extend(_messages(value, f"{where}.value"))
    return found


def _messages(value: Mapping[str, Any], where: str) -> List[Inbound]:
    """The readable shopper messages of one ``messages`` change value."""
    metadata: Mapping[str, Any] = value["metadata"] if isinstance(value.get("metadata"), Mapping) else {}
    names: Dict[str, Any] = {}
    contacts = value.get("contacts")
    for contact in contacts if isinstance(contacts, list) else []:
        if isinstance(contact, Mapping) and isinstance(contact.get("profile"), Mapping):
            names[str(contact.get("wa_id"))] = contact["profile"].get("name")
    messages = value.get("messages")
    if messages is None:
        return []
    if not isinstance(messages, list):
        _skip(where, "messages is not a list")
        return []
    found: List[Inbound] = []
    for m, message in enumerate(messages):
        if not isinstance(message, Mapping):
            _skip(f"{where}.messages[{m}]", "not an object")
            continue
        message_id, wa_id = message.get("id"), message.get("from")
        if not isinstance(message_id, str) or not message_id or not isinstance(wa_id, str) or not wa_id:
            _skip(f"{where}.messages[{m}]", "no id or no sender")
            continue
        kind, text = _readable_text(message)
        if text is None and kind not in ASK_FOR_TEXT:
            logger.debug("whatsapp: ignoring a %s message", kind or "typeless")
            continue
        if text is not None and not text.strip():
            continue
        found.append(Inbound(
            message_id=message_id, wa_id=wa_id, text=text.strip() if text is not None else None,
            kind=kind, profile_name=names.get(wa_id) if isinstance(names.get(wa_id), str) else None,
            phone_number_id=str(metadata["phone_number_id"]) if metadata.get("phone_number_id") else None,
            timestamp=str(message["timestamp"]) if message.get("timestamp") is not None else None,
        ))
    return found


# --- outgoing ---------------------------------------------------------------------------


def text_message(to: str, body: str) -> Dict[str, Any]:
    """A plain text message (one chunk of at most TEXT_LIMIT characters)."""
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "text",
            "text": {"body": body, "preview_url": bool(_URL.search(body))}}


def _interactive(to: str, interactive: Dict[str, Any]) -> Dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "interactive",
            "interactive": interactive}


def _choices(buttons: Sequence[Mapping[str, Any]]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Rasa buttons as (title, payload) choices, and link buttons as text lines."""
    choices, links = [], []
    for button in buttons:
        if not isinstance(button, Mapping):
            continue
        title = " ".join(str(button.get("title") or "").split())
        payload = str(button.get("payload") or "").strip()
        url = str(button.get("url") or "").strip()
        if url and not payload:
            links.append(f"{title}: {url}" if title else url)
        elif title or payload:
            choices.append((title or payload, payload or title))
    return choices, links


def _reply_id(payload: str, title: str, limit: int) -> str:
    if len(payload) <= limit:
        return payload
    # Too long to travel as the id: the title comes back instead and is read as text.
    logger.warning("whatsapp: a button payload is longer than %d characters; its title is sent instead", limit)
    return title[:limit]


def reply_messages(to: str, text: str, buttons: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The messages that show `text` with Rasa `buttons` on WhatsApp.

    Up to three choices become reply buttons, more become a list (at most ten
    rows).  The id of each is the button's payload, so a tap comes back as
    exactly what Rasa expects.  Link buttons cannot be reply buttons: their
    URLs are added to the text.
    """
    choices, links = _choices(buttons)
    body = "\n".join(part for part in [text.strip(), *links] if part)
    if not choices:
        return [text_message(to, chunk) for chunk in split_text(body, TEXT_LIMIT)]
    messages: List[Dict[str, Any]] = []
    action: Dict[str, Any]
    if utf16_len(body) > BODY_LIMIT:
        messages += [text_message(to, chunk) for chunk in split_text(body, TEXT_LIMIT)]
        body = CHOOSE_PROMPT
    body = body or CHOOSE_PROMPT
    if len(choices) <= MAX_BUTTONS:
        replies: OrderedDict[str, str] = OrderedDict()
        for title, payload in choices:
            replies.setdefault(_reply_id(payload, title, BUTTON_ID_LIMIT), shorten(title, BUTTON_TITLE_LIMIT))
        action = {"buttons": [{"type": "reply", "reply": {"id": id_, "title": title}}
                              for id_, title in replies.items()]}
        messages.append(_interactive(to, {"type": "button", "body": {"text": body}, "action": action}))
        return messages
    if len(choices) > MAX_ROWS:
        logger.warning("whatsapp: %d choices, a list shows %d; the rest are left out", len(choices), MAX_ROWS)
    rows: OrderedDict[str, Dict[str, str]] = OrderedDict()
    for title, payload in choices[:MAX_ROWS]:
        row = {"id": _reply_id(payload, title, ROW_ID_LIMIT), "title": shorten(title, ROW_TITLE_LIMIT)}
        if row["title"] != title:
            row["description"] = shorten(title, ROW_DESCRIPTION_LIMIT)
        rows.setdefault(row["id"], row)
    action = {"button": LIST_BUTTON_LABEL, "sections": [{"rows": list(rows.values())}]}
    messages.append(_interactive(to, {"type": "list", "body": {"text": body}, "action": action}))
    return messages


def _masked(wa_id: str) -> str:
    """A phone number fit for logs: enough to tell shoppers apart, not to call them."""
    return f"…{wa_id[-4:]}" if len(wa_id) > 4 else "…"


class WhatsAppOutput(OutputChannel):
    """Sends the assistant's messages to one WhatsApp number through the Graph API.

    Holds no conversation state, so one instance serves every shopper, and it
    can be built from the settings alone to write to a shopper outside a
    webhook call.
    """

    def __init__(self, access_token: str, phone_number_id: str, base_url: str, *,
                 client: Optional[httpx.AsyncClient] = None, attempts: int = SEND_ATTEMPTS,
                 backoff: float = SEND_BACKOFF) -> None:
        """One sender per business number, shared by every conversation.

        Args:
            access_token: a system user's permanent token with whatsapp_business_messaging.
            phone_number_id: the id of the business number (not the number itself).
            base_url: the Graph API with its version, e.g. https://graph.facebook.com/v21.0.
            client: a shared client; one is created on first use otherwise.
            attempts: tries per message before it is given up and logged.
            backoff: first pause between tries in seconds.
        """
        super().__init__()
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.messages_url = f"{base_url.rstrip('/')}/{phone_number_id}/messages"
        self._graph = GraphClient(client=client, attempts=attempts, backoff=backoff)

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None) -> WhatsAppOutput:
        """The sender configured by the WHATSAPP_* settings, needing nothing from a webhook.

        Raises:
            ChannelNotConfigured: a setting the sender needs is not set.
        """
        settings = settings or get_settings()
        require_settings(settings, ("whatsapp_access_token", "whatsapp_phone_number_id", "whatsapp_api_base_url"),
                         channel="WhatsApp")
        return cls(settings.whatsapp_access_token, settings.whatsapp_phone_number_id,
                   settings.whatsapp_api_base_url)

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        await self._graph.aclose()

    async def post(self, message: Mapping[str, Any], *, best_effort: bool = False) -> Optional[Dict[str, Any]]:
        """POST one message; Meta's answer, or None when it finally failed (logged).

        Never raises: a message that cannot be delivered must not end the
        conversation turn that produced it.  `best_effort` tries once and
        logs a failure as a warning, for extras such as read receipts.
        """
        if message.get("to"):  # Rasa addresses the conversation; Meta wants the bare WhatsApp id
            message = {**message, "to": unscoped(CHANNEL, str(message["to"]))}
        to = _masked(str(message["to"])) if message.get("to") else "WhatsApp"
        kind = message.get("type") or ("read receipt" if message.get("status") == "read" else "status")
        what = kind if best_effort else f"{kind} message"
        try:
            answer = await self._graph.post(self.messages_url, body=message,
                                            headers={"Authorization": f"Bearer {self.access_token}"},
                                            attempts=1 if best_effort else None, log=logger,
                                            what=f"whatsapp: sending a {what} to {to}")
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the turn goes on (see above)
            failure = describe_error(error)
        else:
            if not answer.is_error:
                try:
                    return answer.json()
                except ValueError:
                    return {}
            failure = describe_answer(answer)
        logger.log(logging.WARNING if best_effort else logging.ERROR, "whatsapp: could not send a %s to %s: %s",
                   what, to, failure)
        return None

    async def mark_read(self, message_id: str) -> None:
        """Show the shopper their message was read, and that an answer is being typed.

        One attempt only: a missing read mark is not worth delaying the answer for.
        """
        await self.post({"messaging_product": "whatsapp", "status": "read", "message_id": message_id,
                         "typing_indicator": {"type": "text"}}, best_effort=True)

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        for chunk in split_text(text, TEXT_LIMIT):
            await self.post(text_message(recipient_id, chunk))

    async def send_text_with_buttons(self, recipient_id: Text, text: Text, buttons: List[Dict[Text, Any]],
                                     **kwargs: Any) -> None:
        for message in reply_messages(recipient_id, text or "", buttons):
            await self.post(message)

    async def send_image_url(self, recipient_id: Text, image: Text, **kwargs: Any) -> None:
        await self.post({"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient_id,
                         "type": "image", "image": {"link": image}})

    async def send_custom_json(self, recipient_id: Text, json_message: Union[List, Dict[Text, Any]],
                               **kwargs: Any) -> None:
        """Send a Cloud API message object as written in the response (`custom:`).

        `to` and `messaging_product` are filled in when missing; a list sends
        each object in turn.
        """
        for item in json_message if isinstance(json_message, list) else [json_message]:
            if not isinstance(item, Mapping):
                logger.warning("whatsapp: a custom message that is not an object was not sent")
                continue
            await self.post({"messaging_product": "whatsapp", "to": recipient_id, **item})


# --- the webhook ------------------------------------------------------------------------


class WhatsAppInput(MetaWebhookInput[Inbound]):
    """Receives WhatsApp Cloud API webhooks and starts a turn per shopper message."""

    CHANNEL_NAME = CHANNEL

    def __init__(self, verify_token: str, app_secret: str, output: WhatsAppOutput, *,
                 engine: Optional[Engine] = None, **options: Any) -> None:
        """A channel for one business number.

        Args:
            verify_token: the token typed into Meta's webhook settings.
            app_secret: the Meta app's secret, which signs every webhook body.
            output: sends the answers; its phone number id is the only one served.
            engine: the store that keeps the messages (the configured one by default).
            options: lease, sweep interval and drain timeout, see :class:`MetaWebhookInput`.
        """
        super().__init__(verify_token=verify_token, app_secret=app_secret, engine=engine, **options)
        self.output = output

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        """Built from the WHATSAPP_* settings; credentials.yml holds no secrets for it.

        Raises:
            ChannelNotConfigured: a WhatsApp setting is missing, so the server does not
                start with a webhook Meta could never use.
        """
        settings = get_settings()
        require_settings(settings, CHANNEL_SECRETS[CHANNEL], channel="WhatsApp")
        return cls(settings.whatsapp_verify_token, settings.whatsapp_app_secret,
                   WhatsAppOutput.from_settings(settings))

    def get_output_channel(self) -> Optional[OutputChannel]:
        """Lets Rasa's API (e.g. `/conversations/<wa_id>/execute`) write to a shopper."""
        return self.output

    def deliveries(self, payload: Any) -> List[Inbound]:
        """The body's shopper messages to this channel's number.

        Raises:
            MalformedWebhook: the body is not shaped like a Cloud API webhook.
        """
        return [message for message in parse_webhook(payload) if self._serves(message)]

    def delivery_from_json(self, data: Any) -> Inbound:
        """A message stored before a restart, to run its turn now."""
        return Inbound.from_json(data)

    async def aclose(self) -> None:
        """Close the sender's HTTP client."""
        await self.output.aclose()

    def _serves(self, message: Inbound) -> bool:
        """Only messages to this channel's number: answers go out from it."""
        if message.phone_number_id and message.phone_number_id != self.output.phone_number_id:
            logger.warning("whatsapp: ignoring message %s sent to phone number id %s; this channel serves %s",
                           message.message_id, message.phone_number_id, self.output.phone_number_id)
            return False
        return True

    async def run_turn(self, message: Inbound, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Answer one message, marking it read while the assistant works on it."""
        receipt = asyncio.create_task(self.output.mark_read(message.message_id))
        try:
            if message.text is None:
                await self.output.send_text_message(message.wa_id, TEXT_ONLY_NOTE)
            else:
                await on_new_message(UserMessage(
                    message.text, self.output, scoped(CHANNEL, message.wa_id), input_channel=CHANNEL,
                    message_id=message.message_id, metadata=message.metadata()))
        finally:
            await receipt
