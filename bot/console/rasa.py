"""The console's side of Rasa's HTTP API: read a conversation, write into it.

The conversation itself lives in Rasa's tracker: shopper messages sent while
the assistant is paused are recorded there and nowhere else, so the console
reads the transcript from it.  An agent's reply is appended to the tracker as
a bot message with ``execute_side_effects``, which makes Rasa deliver it
through the output channel of the shopper's latest input channel (the widget's
socket.io room, the WhatsApp or Messenger send API).

No retries on writes: a timed-out append may still have been delivered, and a
shopper getting the same reply twice is worse than an agent clicking again.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

import httpx

logger = logging.getLogger(__name__)

READ_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
#: Running an action can call the action server and the store.
ACTION_TIMEOUT = httpx.Timeout(30.0, connect=3.0)

#: The response the assistant greets a shopper with when an agent hands back.
BACK_WITH_BOT = "utter_back_with_bot"


class RasaUnavailable(Exception):
    """Rasa could not be reached or refused the request; the message is fit for an agent."""


class RasaClient:
    """Calls the Rasa server's HTTP API with the server's auth token."""

    def __init__(self, base_url: str, token: str, *, client: Optional[httpx.AsyncClient] = None) -> None:
        """Talk to the Rasa server at `base_url` (RASA_URL), authorised by `token` (RASA_AUTH_TOKEN)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._client = client or httpx.AsyncClient(timeout=READ_TIMEOUT)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _url(self, conversation_id: str, tail: str) -> str:
        # Conversation ids are "<channel>:<id>": quote everything but the colon, which Rasa's routes do not decode.
        return f"{self.base_url}/conversations/{quote(conversation_id, safe=':')}/{tail}"

    async def _call(self, method: str, url: str, *, params: Dict[str, str], json: Any = None,
                    timeout: httpx.Timeout = READ_TIMEOUT) -> Any:
        try:
            answer = await self._client.request(method, url, params={**params, "token": self.token}, json=json,
                                                timeout=timeout)
        except httpx.HTTPError as error:
            logger.warning("console: Rasa at %s could not be reached: %s", self.base_url, error.__class__.__name__)
            raise RasaUnavailable("The assistant's server could not be reached; try again in a moment.") from None
        if answer.status_code >= 400:
            logger.warning("console: Rasa answered %s to %s %s: %s", answer.status_code, method,
                           url.replace(self.base_url, ""), answer.text[:300])
            raise RasaUnavailable(f"The assistant's server refused the request (HTTP {answer.status_code}).")
        try:
            return answer.json()
        except ValueError:
            return None

    async def tracker(self, conversation_id: str) -> Dict[str, Any]:
        """The conversation's tracker (events since the last restart)."""
        found = await self._call("GET", self._url(conversation_id, "tracker"), params={})
        if not isinstance(found, dict):
            raise RasaUnavailable("The assistant's server sent a conversation the console cannot read.")
        return found

    async def append(self, conversation_id: str, events: Sequence[Dict[str, Any]], *, deliver: bool) -> None:
        """Add `events` to the conversation; with `deliver`, bot messages go out to the shopper too."""
        params = {"output_channel": "latest"}
        if deliver:
            params["execute_side_effects"] = "true"
        await self._call("POST", self._url(conversation_id, "tracker/events"), params=params, json=list(events))

    async def execute(self, conversation_id: str, action: str) -> None:
        """Run one action (a response such as utter_back_with_bot) and send what it says to the shopper."""
        await self._call("POST", self._url(conversation_id, "execute"), params={"output_channel": "latest"},
                         json={"name": action}, timeout=ACTION_TIMEOUT)

    # --- what the console does with them -----------------------------------------------

    async def send_reply(self, conversation_id: str, text: str, agent_name: str) -> None:
        """Deliver an agent's message; the tracker keeps who wrote it."""
        await self.append(conversation_id, [agent_message(text, agent_name)], deliver=True)

    async def resume(self, conversation_id: str, closing_line: Optional[str] = None,
                     agent_name: str = "", greet: bool = False) -> None:
        """Let the assistant answer the shopper's next message again.

        With `closing_line`, the agent's last message goes out first; with
        `greet`, the assistant says it is back (utter_back_with_bot).  The
        tracker then ends in `action_listen`, as after any turn of the
        assistant's own, so its next prediction starts from a listening state.
        """
        events: List[Dict[str, Any]] = []
        if closing_line:
            events.append(agent_message(closing_line, agent_name))
        events.append({"event": "resume"})
        await self.append(conversation_id, events, deliver=bool(closing_line))
        if greet:
            await self.execute(conversation_id, BACK_WITH_BOT)
        await self.append(conversation_id, [{"event": "action", "name": "action_listen"}], deliver=False)


def agent_message(text: str, agent_name: str) -> Dict[str, Any]:
    """A bot event carrying an agent's text, marked with their name for the transcript."""
    return {"event": "bot", "text": text, "metadata": {"agent": agent_name}}
