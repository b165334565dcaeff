"""Proactive updates in the Rasa server: the signed tracking feeds and the outbox worker.

Two webhooks, each on only when its secret is set:

* ``POST /webhooks/aftership/webhook``: AfterShip's tracking webhooks, signed
  with ``aftership-hmac-sha256`` (base64 HMAC-SHA256 of the raw body, keyed
  with AFTERSHIP_WEBHOOK_SECRET);
* ``POST /webhooks/tracking/webhook``: the project's own event format (what
  ``python -m bot import events`` reads), signed the same way in
  ``x-tracking-hmac-sha256`` with TRACKING_WEBHOOK_SECRET, for shops that pull
  carrier APIs themselves.

A wrong or missing signature gets 401 and nothing is stored; a body that is not
well formed gets 400; a tracking number the store does not know is recorded and
answered 200, so the feed does not retry it for days.  What a call stores and
the updates it queues are one transaction.

:class:`Notifier` sends the queued updates.  Each is claimed in the store by
one process, said in its conversation through the external intent
``EXTERNAL_tracking_update`` under the conversation's lock (so it is in the
transcript, and the tracker shows whether it was said before a restart), and
handed to the conversation's channel:

* the widget: at once to an open page, which confirms it; a page opened later
  is sent the updates it has not confirmed;
* WhatsApp and Messenger: free-form within 24 hours of the shopper's last
  message; outside that window the approved utility template the settings
  name, or nothing (recorded as not sent);
* REST: recorded in the conversation, where an integration reads it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text, Tuple

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, OutputChannel, UserMessage
from rasa.shared.core.events import UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.orm import Session, sessionmaker

from bot.config import Settings, get_settings
from bot.domain import aftership
from bot.domain.carriers import STATUS_LABELS
from bot.domain.clock import utcnow
from bot.domain.enums import NoticeState
from bot.services import updates
from bot.store import db

logger = logging.getLogger(__name__)

#: The external intent and entity the update action answers (actions/updates.py).
UPDATE_INTENT = "EXTERNAL_tracking_update"
UPDATE_ENTITY = "notification_id"
#: The trigger's proof that it comes from the outbox (see `updates.trigger_key`).
KEY_ENTITY = "update_key"
#: The own feed's signature header (same scheme as AfterShip's).
OWN_SIGNATURE_HEADER = "x-tracking-hmac-sha256"
#: Meta's customer service window: free-form messages only this long after the shopper's last message.
SERVICE_WINDOW = dt.timedelta(hours=24)
#: The widget's event confirming an update was shown.
SEEN_EVENT = "update_seen"


def service_window_open(last_user_message: Optional[dt.datetime], now: dt.datetime) -> bool:
    return last_user_message is not None and now - last_user_message < SERVICE_WINDOW


def last_user_message_at(tracker: Any) -> Optional[dt.datetime]:
    """When the shopper last wrote (external intents are not the shopper)."""
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered) and not (event.intent_name or "").startswith("EXTERNAL_"):
            return dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc)
    return None


def already_said(tracker: Any, notification_id: int) -> bool:
    """Whether this update was triggered in the conversation before (a restart after saying it)."""
    for event in tracker.events:
        if isinstance(event, UserUttered) and event.intent_name == UPDATE_INTENT:
            for entity in event.entities or []:
                if entity.get("entity") == UPDATE_ENTITY and str(entity.get("value")) == str(notification_id):
                    return True
    return False


class Recording(CollectingOutputChannel):
    """Collects what the update action says and passes it on to the real channel (when there is one)."""

    def __init__(self, real: Optional[OutputChannel]) -> None:
        super().__init__()
        self.real = real

    @classmethod
    def name(cls) -> Text:
        return "updates"

    async def send_response(self, recipient_id: Text, message: Dict[Text, Any]) -> None:
        self.messages.append({key: value for key, value in message.items() if key in ("text", "buttons")})
        if self.real is not None:
            await self.real.send_response(recipient_id, dict(message))


def template_parameters(outgoing: updates.Outgoing, tz: Any) -> List[str]:
    """The template's three body parameters: the order number, the status in words, and a date."""
    status = STATUS_LABELS.get(str(outgoing.facts.get("status")), "updated")
    when = outgoing.facts.get("eta") or ""
    if when:
        day = dt.date.fromisoformat(when)
        when = f"{day:%a} {day.day} {day:%b}"
    else:
        when = utcnow().astimezone(tz).strftime("%a %-d %b")
    return [outgoing.order_number, status, when]


class Notifier:
    """The outbox worker of one Rasa server process (any number may run against one store)."""

    def __init__(self, settings: Settings, sessions: sessionmaker,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.app: Any = None
        self._task: Optional[asyncio.Task[None]] = None
        self._wake: Optional[asyncio.Event] = None
        self._stopping = False
        self._next_sweep: Optional[dt.datetime] = None

    def _store(self, work: Callable[[Session], Any]) -> Awaitable[Any]:
        def run() -> Any:
            with self.sessions() as session, session.begin():
                return work(session)
        return asyncio.to_thread(run)

    def start(self, app: Any) -> None:
        self.app = app
        self._stopping = False
        self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - the store may be back next round
                logger.exception("updates: the outbox round failed; trying again in %.0f s",
                                 self.settings.notify_poll_seconds)
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.notify_poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def round(self) -> int:
        """Sweep for stalled parcels when due, then send every update that is due; returns how many were sent."""
        now = self.clock()
        if self._next_sweep is None or now >= self._next_sweep:
            self._next_sweep = now + dt.timedelta(minutes=self.settings.notify_sweep_minutes)
            queued = await self._store(lambda s: updates.sweep(session=s, settings=self.settings, now=now))
            if queued:
                logger.info("updates: the sweep queued %d update(s) for parcels that went quiet", queued)
        claimed = await self._store(lambda s: updates.claim_due(session=s, now=now))
        sent = 0
        for notification_id in claimed:
            try:
                sent += await self.deliver(notification_id)
            except Exception as error:  # noqa: BLE001 - one update must not stop the others
                logger.exception("updates: could not send update %s", notification_id)
                await self._finish(notification_id, NoticeState.FAILED, f"error: {type(error).__name__}")
        return sent

    async def _finish(self, notification_id: int, state: NoticeState, outcome: str = "",
                      messages: Optional[List[Dict[str, Any]]] = None) -> None:
        now = self.clock()
        await self._store(lambda s: updates.finish(session=s, notification_id=notification_id, state=state, now=now,
                                                   outcome=outcome, messages=messages or []))

    def _channel(self, name: str) -> Optional[InputChannel]:
        for channel in getattr(self.app.ctx, "input_channels", None) or []:
            if channel.name() == name:
                return channel
        return None

    def _output(self, name: str, notification_id: int) -> Optional[OutputChannel]:
        channel = self._channel(name)
        if channel is None:
            return None
        output = channel.get_output_channel()
        if name == "widget" and output is not None:
            from connectors.widget import UpdateOutput

            return UpdateOutput(output.sio, notification_id)
        return output

    async def deliver(self, notification_id: int) -> int:
        """Send one claimed update; 1 when it went out."""
        now = self.clock()
        outgoing = await self._store(lambda s: updates.prepare(session=s, notification_id=notification_id,
                                                               settings=self.settings, now=now))
        if outgoing is None:
            return 0  # closed as skipped
        agent = getattr(self.app.ctx, "agent", None)
        if agent is None or not agent.is_ready():
            await self._finish(notification_id, NoticeState.FAILED, "the assistant's model is not loaded yet")
            return 0
        conversation = outgoing.conversation_id
        async with agent.lock_store.lock(conversation):
            tracker = await agent.processor.fetch_tracker_and_update_session(conversation)
            if already_said(tracker, notification_id):
                await self._finish(notification_id, NoticeState.SENT, "found in the conversation after a restart")
                return 0
            mode, why = self._mode(outgoing, last_user_message_at(tracker), now)
            if mode == "none":
                await self._finish(notification_id, NoticeState.NOT_SENT, why)
                return 0
            real = self._output(outgoing.channel, notification_id) if mode == "free" else None
            if mode == "free" and real is None and outgoing.channel != "rest":
                await self._finish(notification_id, NoticeState.NOT_SENT, f"the {outgoing.channel} channel is off")
                return 0
            if mode == "template" and not await self._send_template(outgoing):
                await self._finish(notification_id, NoticeState.FAILED, f"the {outgoing.channel} template was refused")
                return 0
            recording = Recording(real)
            entities = [{"entity": UPDATE_ENTITY, "value": str(notification_id)},
                        {"entity": KEY_ENTITY, "value": updates.trigger_key(self.settings, notification_id)}]
            await agent.trigger_intent(UPDATE_INTENT, entities, recording, tracker)
        if not recording.messages:
            # The action said nothing: a person holds the conversation (the bot is paused), or the update
            # no longer applies to it.
            await self._finish(notification_id, NoticeState.NOT_SENT, "nothing was said: the conversation is paused")
            return 0
        outcome = {"free": f"sent on {outgoing.channel}", "template": f"sent as the {outgoing.channel} template"}[mode]
        await self._finish(notification_id, NoticeState.SENT, outcome, recording.messages)
        logger.info("updates: update %s (%s) %s", notification_id, outgoing.kind, outcome)
        return 1

    def _mode(self, outgoing: updates.Outgoing, last_message: Optional[dt.datetime],
              now: dt.datetime) -> Tuple[str, str]:
        """"free", "template" or "none" (with the reason) for this channel and the shopper's last message."""
        if outgoing.channel not in ("whatsapp", "messenger"):
            return "free", ""
        if service_window_open(last_message, now):
            return "free", ""
        template = (self.settings.whatsapp_update_template if outgoing.channel == "whatsapp"
                    else self.settings.messenger_update_template)
        if template:
            return "template", ""
        setting = "WHATSAPP_UPDATE_TEMPLATE" if outgoing.channel == "whatsapp" else "MESSENGER_UPDATE_TEMPLATE"
        return "none", f"outside the 24-hour window and no {setting} is set"

    async def _send_template(self, outgoing: updates.Outgoing) -> bool:
        output = self._channel(outgoing.channel)
        sender = output.get_output_channel() if output is not None else None
        if sender is None:
            return False
        parameters = [{"type": "text", "text": value} for value in template_parameters(outgoing, self.settings.tz)]
        if outgoing.channel == "whatsapp":
            answer = await sender.post({
                "messaging_product": "whatsapp", "to": outgoing.conversation_id, "type": "template",
                "template": {"name": self.settings.whatsapp_update_template,
                             "language": {"code": self.settings.whatsapp_template_language},
                             "components": [{"type": "body", "parameters": parameters}]}})
            return answer is not None
        return await sender.send_utility_template(
            outgoing.conversation_id, self.settings.messenger_update_template,
            self.settings.messenger_template_language, [p["text"] for p in parameters])


class UpdatesInput(InputChannel):
    """The tracking feeds' webhooks and the outbox worker, in every Rasa server process."""

    @classmethod
    def name(cls) -> Text:
        return "updates"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        if credentials:
            raise ValueError("The updates channel takes no settings in credentials.yml; it is configured with "
                             "AFTERSHIP_WEBHOOK_SECRET, TRACKING_WEBHOOK_SECRET and the NOTIFY_* settings.")
        return cls()

    def __init__(self, settings: Optional[Settings] = None, sessions: Optional[sessionmaker] = None,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings or get_settings()
        self.sessions = sessions or db.session_factory(db.make_engine(self.settings.database_url))
        self.clock = clock
        self.notifier = Notifier(self.settings, self.sessions, clock)

    def url_prefix(self) -> Text:
        return "/webhooks"

    def _store(self, work: Callable[[Session], Any]) -> Awaitable[Any]:
        def run() -> Any:
            with self.sessions() as session, session.begin():
                return work(session)
        return asyncio.to_thread(run)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        feeds = Blueprint("tracking_feeds", __name__)

        @feeds.route("/aftership/webhook", methods=["POST"])
        async def aftership_webhook(request: Request) -> HTTPResponse:
            return await self._aftership(request)

        @feeds.route("/tracking/webhook", methods=["POST"])
        async def own_webhook(request: Request) -> HTTPResponse:
            return await self._own(request)

        @feeds.listener("after_server_start")
        async def start(app: Any, *_: Any) -> None:
            self.notifier.start(app)

        @feeds.listener("before_server_stop")
        async def stop(*_: Any) -> None:
            await self.notifier.stop()

        return feeds

    def _refused(self, feed: str, request: Request, body: bytes, secret: str, header: str) -> Optional[HTTPResponse]:
        if not secret:
            return response.json({"error": f"the {feed} feed is not enabled on this server"}, status=404)
        if len(body) > aftership.MAX_BODY_BYTES:
            return response.json({"error": "the body is too large"}, status=413)
        if not aftership.signature_is_valid(secret, body, request.headers.get(header)):
            logger.warning("updates: refused a %s webhook from %s: %s", feed, request.ip,
                           f"{header} does not match the body" if request.headers.get(header) else f"no {header}")
            return response.json({"error": "invalid signature"}, status=401)
        return None

    async def _aftership(self, request: Request) -> HTTPResponse:
        body: bytes = request.body or b""
        refused = self._refused("AfterShip", request, body, self.settings.aftership_webhook_secret,
                                aftership.SIGNATURE_HEADER)
        if refused is not None:
            return refused
        try:
            update = aftership.parse_webhook(body)
        except aftership.MalformedFeed as error:
            logger.warning("updates: refused a signed AfterShip webhook: %s", error)
            return response.json({"error": str(error)}, status=400)
        now = self.clock()
        try:
            result = await self._store(lambda s: updates.ingest_aftership(session=s, update=update,
                                                                          settings=self.settings, now=now))
        except Exception:  # noqa: BLE001 - AfterShip retries a 5xx
            logger.exception("updates: could not store an AfterShip webhook; answered 500 so it is sent again")
            return response.json({"error": "could not store the update, send it again later"}, status=500)
        if result.unknown:
            logger.info("updates: AfterShip reported tracking number(s) not in the store; recorded: %d",
                        len(result.unknown))
        if result.queued:
            self.notifier.wake()
        return response.json(result.to_json())

    async def _own(self, request: Request) -> HTTPResponse:
        body: bytes = request.body or b""
        refused = self._refused("tracking", request, body, self.settings.tracking_webhook_secret,
                                OWN_SIGNATURE_HEADER)
        if refused is not None:
            return refused
        now = self.clock()
        try:
            result = await self._store(lambda s: updates.ingest_own_events(session=s, body=body,
                                                                           settings=self.settings, now=now))
        except updates.FeedRejected as error:
            logger.warning("updates: refused a signed tracking batch: %s", error)
            return response.json({"error": "the batch was refused; nothing was stored", "problems": error.problems},
                                 status=400)
        except Exception:  # noqa: BLE001
            logger.exception("updates: could not store a tracking batch; answered 500 so it is sent again")
            return response.json({"error": "could not store the batch, send it again later"}, status=500)
        if result.queued:
            self.notifier.wake()
        return response.json(result.to_json())
