"""Proactive updates in the conversation: consent, stopping, and the update itself.

The Rasa server's outbox worker (``connectors/updates.py``) triggers the
external intent ``EXTERNAL_tracking_update`` with the update's id;
:class:`ActionTrackingUpdate` then says it in the conversation, so it is in
the transcript and a reply such as "why?" is about that order, whose
verification the update opens again on this conversation.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import polite_failure, proven_order
from actions.context import context
from bot.domain.carriers import FINAL_STATUSES
from bot.domain.updates import wants_updates
from bot.services import updates
from bot.services.verification import remember
from bot.store.queries import get_order

#: The intent the outbox triggers, and the entity carrying the update's id.
UPDATE_INTENT = "EXTERNAL_tracking_update"
UPDATE_ENTITY = "notification_id"
KEY_ENTITY = "update_key"


def channel_of(conversation_id: str) -> str:
    """Conversation ids are ``<channel>:<id>``."""
    return conversation_id.split(":", 1)[0] if ":" in conversation_id else "rest"


def quiet_note(settings: Any) -> str:
    """" (not between 21:00 and 08:00)" when quiet hours are set."""
    hours = settings.notify_quiet_hours
    return f" (not between {hours.replace('-', ' and ')})" if hours else ""


def still_moving(session: Session, number: str) -> Optional[bool]:
    """Whether the order has a parcel still on its way (None: no such order)."""
    order = get_order(session=session, number=number)
    if order is None:
        return None
    return not order.shipments or any(s.status not in FINAL_STATUSES for s in order.shipments)


class ActionSubscribeUpdates(Action):
    """"Yes, message me": consent to updates about the verified order on this conversation."""

    def name(self) -> Text:
        return "action_subscribe_updates"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        if wants_updates(tracker.latest_message.get("text") or "") is False:
            # "keine Updates mehr bitte": whatever the classifier read, a refusal is never consent.
            return await ActionUnsubscribeUpdates().run(dispatcher, tracker, domain)
        number = await proven_order(tracker)
        if number is None and tracker.active_loop_name:
            # Asked while the bot checks the order: consent follows once it is verified.
            dispatcher.utter_message(response="utter_updates_after_check")
            return [SlotSet("updates_wanted", True)]
        if number is None:
            dispatcher.utter_message(response="utter_updates_which_order")
            return [SlotSet("pending_job", "status"), SlotSet("updates_wanted", True)]
        ctx = context()
        conversation = tracker.sender_id

        def work(session: Session) -> str:
            moving = still_moving(session, number)
            if not moving:
                return "utter_updates_nothing_to_follow"
            new = updates.subscribe(session=session, conversation_id=conversation,
                                    channel=channel_of(conversation), order_number=number,
                                    settings=ctx.settings, now=ctx.now())
            return "utter_updates_on" if new else "utter_updates_already"

        response = await ctx.store(work)
        dispatcher.utter_message(response=response, number=number, quiet=quiet_note(ctx.settings))
        return [SlotSet("updates_wanted", None)]


class ActionUnsubscribeUpdates(Action):
    """"Stop updates": for the order in hand, or every order this conversation follows."""

    def name(self) -> Text:
        return "action_unsubscribe_updates"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        ctx = context()
        conversation = tracker.sender_id
        followed = await ctx.store(lambda session: updates.subscriptions(session=session, conversation_id=conversation))
        number = tracker.get_slot("verified_order")
        target = number if number in followed else None  # one order if it is the one in hand, else all
        stopped = await ctx.store(lambda session: updates.unsubscribe(
            session=session, conversation_id=conversation, order_number=target, now=ctx.now()))
        if not stopped:
            dispatcher.utter_message(response="utter_updates_none")
        else:
            dispatcher.utter_message(response="utter_updates_off", number=" and ".join(stopped))
        return []


class ActionTrackingUpdate(Action):
    """Says one proactive update (triggered by the outbox) and reopens the order's verification."""

    def name(self) -> Text:
        return "action_tracking_update"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        entities = tracker.latest_message.get("entities", [])
        ids = [e.get("value") for e in entities if e.get("entity") == UPDATE_ENTITY]
        keys = [e.get("value") for e in entities if e.get("entity") == KEY_ENTITY]
        try:
            notification_id = int(ids[-1])
        except (IndexError, TypeError, ValueError):
            return []
        ctx = context()
        if not updates.trigger_is_genuine(ctx.settings, notification_id, keys[-1] if keys else None):
            return []  # typed by someone, not sent by the outbox
        conversation = tracker.sender_id

        def work(session: Session) -> Optional[tuple]:
            facts = updates.notification_facts(session=session, notification_id=notification_id)
            if facts is None or facts["conversation_id"] != conversation or facts["state"] != "queued":
                return None  # not this conversation's update, or not one being sent now: nothing is revealed
            found = updates.wording(session=session, notification_id=notification_id, settings=ctx.settings,
                                    now=ctx.now())
            if found is None:
                return None
            remember(session=session, conversation_id=conversation, order_number=found[0], now=ctx.now())
            return found

        found = await ctx.store(work)
        if found is None:
            return []
        number, response, variables = found
        dispatcher.utter_message(response=response, **variables)
        return [SlotSet("verified_order", number), SlotSet("order_number", number),
                SlotSet("status_told", number), SlotSet("pending_job", None)]
