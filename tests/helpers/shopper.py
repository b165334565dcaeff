"""Talking to a running assistant as a shopper does on the REST channel, and reading its tracker."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import httpx

#: A turn of the real assistant on a busy machine.
TURN_TIMEOUT_S = 60.0


def _checked(url: str, text: str, answer: httpx.Response) -> List[Dict[str, Any]]:
    assert answer.status_code == 200, f"{url} answered {answer.status_code} to {text!r}: {answer.text[:500]}"
    return answer.json()


def rest_messages(url: str, sender: str, text: str, *, timeout: float = TURN_TIMEOUT_S) -> List[Dict[str, Any]]:
    """POST `text` from `sender` to the REST webhook of the assistant at `url`; the bot's messages in answer."""
    answer = httpx.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": text}, timeout=timeout)
    return _checked(url, text, answer)


async def rest_messages_async(client: httpx.AsyncClient, url: str, sender: str, text: str, *,
                              timeout: float = TURN_TIMEOUT_S) -> List[Dict[str, Any]]:
    """:func:`rest_messages` on an async client, for messages sent at the same time."""
    answer = await client.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": text},
                               timeout=timeout)
    return _checked(url, text, answer)


def texts(messages: Sequence[Mapping[str, Any]]) -> List[str]:
    """The text of each message ("" for one without text, such as an image)."""
    return [str(message.get("text") or "") for message in messages]


def rest_say(url: str, sender: str, text: str, *, timeout: float = TURN_TIMEOUT_S) -> List[str]:
    """What the assistant at `url` answers `sender` on the REST channel: one text per message."""
    return texts(rest_messages(url, sender, text, timeout=timeout))


def tracker(url: str, conversation_id: str, token: str) -> Dict[str, Any]:
    """The conversation's tracker, read through Rasa's HTTP API."""
    answer = httpx.get(f"{url}/conversations/{conversation_id}/tracker", params={"token": token}, timeout=30)
    assert answer.status_code == 200, f"the tracker of {conversation_id}: {answer.status_code} {answer.text[:500]}"
    return answer.json()


def user_events(url: str, conversation_id: str, token: str) -> List[Dict[str, Any]]:
    """The shopper's messages as the conversation's tracker recorded them."""
    return [event for event in tracker(url, conversation_id, token).get("events") or [] if event.get("event") == "user"]
