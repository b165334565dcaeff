"""The WhatsApp channel, over Meta's WhatsApp Cloud API.

Shoppers write to the shop's WhatsApp number; Meta calls the webhook
(`/webhooks/whatsapp/webhook`) with a signed JSON body, and the assistant
answers through the Graph API (`POST {base}/{phone_number_id}/messages`).

What this adds to the shape of Rasa's own Meta connector:

* the body's `X-Hub-Signature-256` is checked with a constant-time comparison
  and a bad or missing one is refused with 403, so nobody but Meta can speak
  for a shopper;
* the webhook answers 200 at once and the turn runs afterwards, because Meta
  re-delivers whatever it did not see acknowledged quickly;
* every message of a batch is handled (in order per shopper), and a message id
  seen before (on any replica) is not handled again;
* status callbacks and message types the assistant cannot read never start a
  turn; media, locations and the like get a short note asking for text;
* sends are retried on 429, 5xx and network errors, and a send that finally
  fails is logged instead of breaking the conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Set, Text, Tuple, Union

import httpx
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bot.config import Settings, get_settings
from bot.db import session_scope
from bot.inbox import first_delivery
from connectors import TEXT_ONLY_NOTE

logger = logging.getLogger(__name__)

#: The channel's name: Rasa serves it under /webhooks/whatsapp/.
CHANNEL = "whatsapp"
SIGNATURE_HEADER = "X-Hub-Signature-256"
WEBHOOK_OBJECT = "whatsapp_business_account"

# WhatsApp's limits (Cloud API reference, "messages" and "interactive" objects).
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

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Attempts per send (the first one included).
SEND_ATTEMPTS = 4
#: Longest wait honoured from a 429's Retry-After; longer means "give up for now".
MAX_RETRY_AFTER_S = 10.0

_URL = re.compile(r"https?://\S", re.IGNORECASE)


class MalformedWebhook(ValueError):
    """A webhook body that is not the Cloud API's shape."""


# --- incoming ---------------------------------------------------------------------------


def signature_is_valid(app_secret: str, body: bytes, header: Optional[str]) -> bool:
    """Whether `header` is Meta's HMAC-SHA256 of `body` under the app secret.

    Compared in constant time so the signature cannot be guessed byte by byte.
    """
    if not header or not app_secret:
        return False
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        return False
    expected = hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("ascii", "replace"))


def handshake_answer(mode: Optional[str], token: Optional[str], challenge: Optional[str],
                     verify_token: str) -> Tuple[int, str]:
    """Status and text for Meta's subscription check (`GET` with `hub.*` parameters).

    Meta accepts the webhook only when the challenge comes back verbatim, so
    that is the whole success answer.
    """
    if not mode or token is None or challenge is None:
        return 400, "missing hub.mode, hub.verify_token or hub.challenge"
    if mode != "subscribe" or not hmac.compare_digest(token.encode("utf-8"), verify_token.encode("utf-8")):
        return 403, "verification failed"
    return 200, challenge


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

    def metadata(self) -> Dict[str, Any]:
        """What the tracker keeps about where the message came from."""
        found = {"channel": CHANNEL, "wa_id": self.wa_id, "message_id": self.message_id, "type": self.kind,
                 "profile_name": self.profile_name, "phone_number_id": self.phone_number_id,
                 "timestamp": self.timestamp}
        return {key: value for key, value in found.items() if value is not None}


def _list_of(container: Mapping[str, Any], key: str, where: str, required: bool = False) -> List[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise MalformedWebhook(f"{where}.{key} is not a list")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedWebhook(f"{where} is not an object")
    return value


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
    answer to (reactions, system notices) give nothing.

    Raises:
        MalformedWebhook: the body is not shaped like a Cloud API webhook.
    """
    body = _mapping(payload, "body")
    if body.get("object") != WEBHOOK_OBJECT:
        raise MalformedWebhook(f"object is {body.get('object')!r}, not {WEBHOOK_OBJECT!r}")
    found: List[Inbound] = []
    for e, entry in enumerate(_list_of(body, "entry", "body", required=True)):
        entry = _mapping(entry, f"entry[{e}]")
        for c, change in enumerate(_list_of(entry, "changes", f"entry[{e}]")):
            change = _mapping(change, f"entry[{e}].changes[{c}]")
            if change.get("field") != "messages":
                continue
            where = f"entry[{e}].changes[{c}].value"
            value = _mapping(change.get("value"), where)
            metadata = value.get("metadata") if isinstance(value.get("metadata"), Mapping) else {}
            names = {}
            for contact in _list_of(value, "contacts", where):
                if isinstance(contact, Mapping) and isinstance(contact.get("profile"), Mapping):
                    names[str(contact.get("wa_id"))] = contact["profile"].get("name")
            for m, message in enumerate(_list_of(value, "messages", where)):
                message = _mapping(message, f"{where}.messages[{m}]")
                message_id, wa_id = message.get("id"), message.get("from")
                if not isinstance(message_id, str) or not message_id or not isinstance(wa_id, str) or not wa_id:
                    raise MalformedWebhook(f"{where}.messages[{m}] has no id or no sender")
                kind, text = _readable_text(message)
                if text is None and kind not in ASK_FOR_TEXT:
                    logger.debug("whatsapp: ignoring a %s message", kind or "typeless")
                    continue
                if text is not None and not text.strip():
                    continue
                found.append(Inbound(
                    message_id=message_id, wa_id=wa_id, text=text.strip() if text is not None else None,
                    kind=kind, profile_name=names.get(wa_id),
                    phone_number_id=str(metadata["phone_number_id"]) if metadata.get("phone_number_id") else None,
                    timestamp=str(message["timestamp"]) if message.get("timestamp") is not None else None,
                ))
    return found


# --- outgoing ---------------------------------------------------------------------------


def text_chunks(text: str, limit: int = TEXT_LIMIT) -> List[str]:
    """`text` cut into messages WhatsApp accepts, at paragraph, line, sentence or word ends."""
    rest = text.strip()
    chunks: List[str] = []
    while len(rest) > limit:
        window = rest[:limit + 1]
        cut = limit
        for separator, keep in (("\n\n", 0), ("\n", 0), (". ", 1), (" ", 0)):
            at = window.rfind(separator)
            if at >= limit // 2:
                cut = at + keep
                break
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _fit(text: str, limit: int) -> str:
    """One line of at most `limit` characters, marked with an ellipsis when shortened."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


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
        return [text_message(to, chunk) for chunk in text_chunks(body)]
    messages: List[Dict[str, Any]] = []
    if len(body) > BODY_LIMIT:
        messages += [text_message(to, chunk) for chunk in text_chunks(body)]
        body = CHOOSE_PROMPT
    body = body or CHOOSE_PROMPT
    if len(choices) <= MAX_BUTTONS:
        replies: "OrderedDict[str, str]" = OrderedDict()
        for title, payload in choices:
            replies.setdefault(_reply_id(payload, title, BUTTON_ID_LIMIT), _fit(title, BUTTON_TITLE_LIMIT))
        action = {"buttons": [{"type": "reply", "reply": {"id": id_, "title": title}}
                              for id_, title in replies.items()]}
        messages.append(_interactive(to, {"type": "button", "body": {"text": body}, "action": action}))
        return messages
    if len(choices) > MAX_ROWS:
        logger.warning("whatsapp: %d choices, a list shows %d; the rest are left out", len(choices), MAX_ROWS)
    rows: "OrderedDict[str, Dict[str, str]]" = OrderedDict()
    for title, payload in choices[:MAX_ROWS]:
        row = {"id": _reply_id(payload, title, ROW_ID_LIMIT), "title": _fit(title, ROW_TITLE_LIMIT)}
        if row["title"] != title:
            row["description"] = _fit(title, ROW_DESCRIPTION_LIMIT)
        rows.setdefault(row["id"], row)
    action = {"button": LIST_BUTTON_LABEL, "sections": [{"rows": list(rows.values())}]}
    messages.append(_interactive(to, {"type": "list", "body": {"text": body}, "action": action}))
    return messages


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        return status == 429 or status >= 500
    return isinstance(error, httpx.TransportError)


_backoff = wait_exponential_jitter(multiplier=0.25, max=4.0, jitter=0.25)


def _wait(state: RetryCallState) -> float:
    """Exponential backoff, or the 429's Retry-After when it is short enough to honour."""
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, httpx.HTTPStatusError) and error.response.status_code == 429:
        try:
            return min(float(error.response.headers.get("Retry-After", "")), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return _backoff(state)


def _masked(wa_id: str) -> str:
    """A phone number fit for logs: enough to tell shoppers apart, not to call them."""
    return f"…{wa_id[-4:]}" if len(wa_id) > 4 else "…"


def _graph_error(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        try:
            detail = error.response.json().get("error") or {}
            return f"HTTP {error.response.status_code}: {detail.get('message')} (code {detail.get('code')})"
        except (ValueError, AttributeError):
            return f"HTTP {error.response.status_code}"
    return f"{error.__class__.__name__}: {error}"


class WhatsAppOutput(OutputChannel):
    """Sends the assistant's messages to one WhatsApp number through the Graph API.

    Holds no conversation state, so one instance serves every shopper, and it
    can be built from the settings alone to write to a shopper outside a
    webhook call.
    """

    def __init__(self, access_token: str, phone_number_id: str, base_url: str, *,
                 client: Optional[httpx.AsyncClient] = None, attempts: int = SEND_ATTEMPTS) -> None:
        """One sender per business number, shared by every conversation.

        Args:
            access_token: a system user's permanent token with whatsapp_business_messaging.
            phone_number_id: the id of the business number (not the number itself).
            base_url: the Graph API with its version, e.g. https://graph.facebook.com/v21.0.
            client: a shared client; one is created on first use otherwise.
            attempts: tries per message before it is given up and logged.
        """
        super().__init__()
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.messages_url = f"{base_url.rstrip('/')}/{phone_number_id}/messages"
        self.attempts = max(1, attempts)
        self._client = client
        self._owns_client = client is None

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None) -> "WhatsAppOutput":
        """The channel configured by WHATSAPP_* settings.

        Raises:
            RasaException: a WhatsApp setting is not set.
        """
        settings = settings or get_settings()
        _require_configured(settings)
        return cls(settings.whatsapp_access_token, settings.whatsapp_phone_number_id,
                   settings.whatsapp_api_base_url)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this instance created it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def post(self, message: Mapping[str, Any], *, best_effort: bool = False) -> Optional[Dict[str, Any]]:
        """POST one message; Meta's answer, or None when it finally failed (logged).

        Never raises: a message that cannot be delivered must not end the
        conversation turn that produced it.  `best_effort` tries once and
        logs a failure as a warning, for extras such as read receipts.
        """
        headers = {"Authorization": f"Bearer {self.access_token}"}
        to = _masked(str(message["to"])) if message.get("to") else "WhatsApp"
        what = message.get("type") or ("read receipt" if message.get("status") == "read" else "status")

        def before_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.warning("whatsapp: sending a %s message to %s failed (%s); retrying", what, to,
                           _graph_error(error) if error else "?")

        retrying = AsyncRetrying(stop=stop_after_attempt(1 if best_effort else self.attempts), wait=_wait,
                                 retry=retry_if_exception(_retryable), before_sleep=before_retry, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    answer = await self._http().post(self.messages_url, json=dict(message), headers=headers)
                    answer.raise_for_status()
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the turn goes on (see above)
            logger.log(logging.WARNING if best_effort else logging.ERROR, "whatsapp: could not send a %s to %s: %s",
                       what if best_effort else f"{what} message", to, _graph_error(error))
            return None
        try:
            return answer.json()
        except ValueError:
            return {}

    async def mark_read(self, message_id: str) -> None:
        """Show the shopper their message was read, and that an answer is being typed.

        One attempt only: a missing read mark is not worth delaying the answer for.
        """
        await self.post({"messaging_product": "whatsapp", "status": "read", "message_id": message_id,
                         "typing_indicator": {"type": "text"}}, best_effort=True)

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        for chunk in text_chunks(text):
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


def _require_configured(settings: Settings) -> None:
    if not settings.channel_enabled(CHANNEL):
        missing = [name.upper() for name in ("whatsapp_verify_token", "whatsapp_app_secret",
                                             "whatsapp_access_token", "whatsapp_phone_number_id")
                   if not str(getattr(settings, name)).strip()]
        raise RasaException(f"The WhatsApp channel needs {', '.join(missing)} (in .env or the environment).")


async def first_delivery_in_store(message_id: str) -> bool:
    """Whether this is the first time any replica sees `message_id` (recorded in the store).

    If the store cannot answer, the message is handled: a rare double answer
    is better than a shopper left without one.
    """
    def record() -> bool:
        with session_scope() as session:
            return first_delivery(session=session, channel=CHANNEL, message_id=message_id)

    try:
        return await asyncio.to_thread(record)
    except Exception:  # noqa: BLE001 - any store failure means "unknown", see above
        logger.exception("whatsapp: could not check message %s for re-delivery; handling it", message_id)
        return True


class WhatsAppInput(InputChannel):
    """Receives WhatsApp Cloud API webhooks and starts a turn per shopper message."""

    def __init__(self, verify_token: str, app_secret: str, output: WhatsAppOutput, *,
                 is_first_delivery: Callable[[str], Awaitable[bool]] = first_delivery_in_store) -> None:
        """A channel for one business number.

        Args:
            verify_token: the token typed into Meta's webhook settings.
            app_secret: the Meta app's secret, which signs every webhook body.
            output: sends the answers; its phone number id is the only one served.
            is_first_delivery: says whether a message id is new (store-backed by default).
        """
        self.verify_token = verify_token
        self.app_secret = app_secret
        self.output = output
        self.is_first_delivery = is_first_delivery
        self._tasks: Set["asyncio.Task[None]"] = set()

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        """Built from the WHATSAPP_* settings; credentials.yml holds no secrets for it.

        Raises:
            RasaException: a WhatsApp setting is missing, so the server does not
                start with a webhook Meta could never use.
        """
        settings = get_settings()
        _require_configured(settings)
        return cls(settings.whatsapp_verify_token, settings.whatsapp_app_secret,
                   WhatsAppOutput.from_settings(settings))

    def get_output_channel(self) -> Optional[OutputChannel]:
        """Lets Rasa's API (e.g. `/conversations/<wa_id>/execute`) write to a shopper."""
        return self.output

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("whatsapp_webhook", __name__)

        @hook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @hook.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            status, text = handshake_answer(request.args.get("hub.mode"), request.args.get("hub.verify_token"),
                                            request.args.get("hub.challenge"), self.verify_token)
            if status == 403:
                logger.warning("whatsapp: webhook verification refused; WHATSAPP_VERIFY_TOKEN must be the "
                               "verify token typed into the Meta app's webhook settings")
            elif status != 200:
                logger.warning("whatsapp: webhook verification refused: %s", text)
            return response.text(text, status=status)

        @hook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not signature_is_valid(self.app_secret, request.body, request.headers.get(SIGNATURE_HEADER)):
                logger.warning("whatsapp: refused a webhook call with a %s %s header from %s",
                               "wrong" if request.headers.get(SIGNATURE_HEADER) else "missing",
                               SIGNATURE_HEADER, request.ip)
                return response.text("invalid signature", status=403)
            try:
                messages = parse_webhook(json.loads(request.body))
            except (ValueError, MalformedWebhook) as error:
                logger.warning("whatsapp: refused a malformed webhook body: %s", error)
                return response.text("malformed body", status=400)
            served = [m for m in messages if self._serves(m)]
            if served:
                task = request.app.add_task(self._handle_batch(served, on_new_message))
                if task is not None:  # a strong reference, so the task cannot be collected mid-turn
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            return response.text("ok")

        @hook.listener("after_server_stop")
        async def close_client(*_: Any) -> None:
            await self.output.aclose()

        return hook

    def _serves(self, message: Inbound) -> bool:
        """Only messages to this channel's number: answers go out from it."""
        if message.phone_number_id and message.phone_number_id != self.output.phone_number_id:
            logger.warning("whatsapp: ignoring message %s sent to phone number id %s; this channel serves %s",
                           message.message_id, message.phone_number_id, self.output.phone_number_id)
            return False
        return True

    async def _handle_batch(self, messages: Sequence[Inbound],
                            on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        """Each shopper's messages in order; different shoppers side by side."""
        by_shopper: "OrderedDict[str, List[Inbound]]" = OrderedDict()
        for message in messages:
            by_shopper.setdefault(message.wa_id, []).append(message)

        async def one_shopper(queue: List[Inbound]) -> None:
            for message in queue:
                await self._handle(message, on_new_message)

        await asyncio.gather(*(one_shopper(queue) for queue in by_shopper.values()))

    async def _handle(self, message: Inbound, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        try:
            if not await self.is_first_delivery(message.message_id):
                logger.info("whatsapp: message %s was delivered before; not handled again", message.message_id)
                return
            receipt = asyncio.create_task(self.output.mark_read(message.message_id))
            try:
                if message.text is None:
                    await self.output.send_text_message(message.wa_id, TEXT_ONLY_NOTE)
                else:
                    await on_new_message(UserMessage(
                        message.text, self.output, message.wa_id, input_channel=CHANNEL,
                        message_id=message.message_id, metadata=message.metadata()))
            finally:
                await receipt
        except Exception:  # noqa: BLE001 - one failed turn must not stop the rest of the batch
            logger.exception("whatsapp: handling message %s from %s failed", message.message_id,
                             _masked(message.wa_id))
