"""The REST channel (`/webhooks/rest/webhook`), unable to speak for another channel's shopper.

Rasa's REST channel takes the conversation id and the input channel from the
request body, so a caller could post as a WhatsApp shopper (whose id is their
phone number) and read their verified order.  This one:

* prefixes every conversation id with ``rest:`` (the widget uses ``widget:``,
  WhatsApp ``whatsapp:``, Messenger ``messenger:``), so no REST caller can
  address another channel's conversation;
* ignores a client's ``input_channel`` and ``metadata``;
* requires ``Authorization: Bearer <REST_TOKEN>`` when REST_TOKEN is set (and
  in production the channel only starts when it is).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Dict, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.channels.rest import RestInput as RasaRestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

logger = logging.getLogger(__name__)

PREFIX = "rest:"
#: What a shopper types fits easily; a megabyte message would hold the server's event loop for
#: seconds while it is parsed, so longer ones are refused before they reach Rasa.
MAX_MESSAGE_CHARS = 2000
#: Longer ids are refused rather than cut, so two callers can never end up in one conversation.
MAX_SENDER_CHARS = 200


class SenderError(ValueError):
    """The request names no usable sender."""


def conversation_id(sender: Any) -> str:
    """The conversation a REST sender talks in: ``rest:<sender>``."""
    if not isinstance(sender, (str, int)) or isinstance(sender, bool):
        raise SenderError("'sender' must be a string")
    text = str(sender).strip()
    if not text or len(text) > MAX_SENDER_CHARS or any(ord(c) < 32 for c in text):
        raise SenderError(f"'sender' must be 1 to {MAX_SENDER_CHARS} printable characters")
    return PREFIX + text


class RestInput(RasaRestInput):
    """Rasa's REST channel with channel-scoped conversation ids and an optional bearer token."""

    def __init__(self, token: str = "") -> None:
        """`token`: when set, every call must carry it as a bearer token."""
        self.token = token

    @classmethod
    def name(cls) -> Text:
        return "rest"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        from bot.config import get_settings

        return cls(token=get_settings().rest_token)

    async def _extract_sender(self, req: Request) -> Optional[Text]:
        return conversation_id((req.json or {}).get("sender"))

    def _extract_input_channel(self, req: Request) -> Text:
        return self.name()  # never the client's choice

    def get_metadata(self, request: Request) -> Optional[Dict[Text, Any]]:
        return None  # metadata is for the assistant's own channels, not for callers to set

    def authorised(self, request: Request) -> bool:
        if not self.token:
            return True
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def blueprint(self, on_new_message: Any) -> Blueprint:
        bp = super().blueprint(on_new_message)

        @bp.middleware("request")
        async def guard(request: Request) -> Optional[HTTPResponse]:
            if request.method != "POST":
                return None
            if not self.authorised(request):
                logger.warning("rest: refused a call without the REST token")
                return response.json({"error": "Authorization: Bearer <REST_TOKEN> is required"}, status=401)
            body = request.json if _json_body(request) else None
            if not isinstance(body, dict):
                return response.json({"error": "the body must be a JSON object with 'sender' and 'message'"},
                                     status=400)
            try:
                conversation_id(body.get("sender"))
            except SenderError as error:
                return response.json({"error": str(error)}, status=400)
            if not isinstance(body.get("message"), str):
                return response.json({"error": "'message' must be a string"}, status=400)
            if len(body["message"]) > MAX_MESSAGE_CHARS:
                return response.json({"error": f"'message' may have at most {MAX_MESSAGE_CHARS} characters"},
                                     status=413)
            return None

        return bp


def _json_body(request: Request) -> bool:
    try:
        request.json  # noqa: B018 - parsing is the check
    except Exception:  # noqa: BLE001 - Sanic raises its own error for a body that is not JSON
        return False
    return True


__all__ = ["RestInput", "UserMessage", "conversation_id"]
