"""Ways out: handing over to a person, help with a question, and noticing when the assistant keeps misunderstanding."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SlotSet, UserUtteranceReverted, UserUttered
from rasa_sdk.executor import CollectingDispatcher

from actions.common import LOOKUP_OFFERS, explain, last_response, latest_intent, polite_failure
from actions.context import context
from actions.jobs import hand_off
from actions.updates import ActionSubscribeUpdates
from bot.domain.enums import HandoffReason
from bot.domain.parsing import find_order_reference


def consecutive_fallbacks(tracker: Tracker) -> int:
    """How many of the shopper's latest messages in a row were not understood."""
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent != "nlu_fallback":
            break
        count += 1
    return count


class ActionHandoff(Action):
    def name(self) -> Text:
        return "action_handoff"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        return await hand_off(dispatcher, tracker, handoff_reason(tracker, domain))


def handoff_reason(tracker: Tracker, domain: Dict[Text, Any]) -> str:
    """Why the conversation goes to a person.

    Accepting the bot's offer keeps the reason the offer was made for (the
    address can't be changed, not understood, an error); otherwise two misses
    in a row, or simply that the shopper asked.
    """
    if consecutive_fallbacks(tracker) >= 2:
        return HandoffReason.NOT_UNDERSTOOD
    offered = tracker.get_slot("handoff_reason")
    if offered and last_bot_text(tracker) == _offer_text(domain):
        return offered
    return HandoffReason.ASKED


def _offer_text(domain: Dict[Text, Any]) -> str:
    return domain.get("responses", {}).get("utter_offer_human", [{}])[0].get("text", "")


def as_order_reference(tracker: Tracker) -> List[EventType]:
    """A message the model could not place, but which names an order, read again as the shopper giving it.

    "got charged twice for ws 1186, where is it" is an order question whatever
    the intent classifier made of it: the message is put back as `inform`
    (the way Rasa's own fallback re-reads a message), so the rules take it into
    the order flow with the number in it.  Nothing when it names no order.
    """
    text = (tracker.latest_message or {}).get("text") or ""
    if text.startswith("/") or not find_order_reference(text, context().settings.order_number_prefix):
        return []
    parse = {**(tracker.latest_message or {}), "intent": {"name": "inform", "confidence": 1.0}}
    return [UserUtteranceReverted(), ActionExecuted("action_listen"),
            UserUttered(text, parse_data=parse, input_channel=tracker.get_latest_input_channel())]


class ActionFallback(Action):
    """Reads a message that names an order as that order's question; otherwise asks to rephrase once,
    and the second miss in a row offers a person.
    """

    def name(self) -> Text:
        return "action_fallback"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        reread = as_order_reference(tracker) or as_reply_to_update(tracker)
        if reread:
            return reread
        if consecutive_fallbacks(tracker) >= 2:
            dispatcher.utter_message(response="utter_still_not_understood")
            dispatcher.utter_message(response="utter_offer_human")
            return [SlotSet("handoff_reason", HandoffReason.NOT_UNDERSTOOD.value)]
        else:
            dispatcher.utter_message(response="utter_default")
            dispatcher.utter_message(response="utter_menu")
        return []


#: A bare "why?" (and its kin): too short for the model, clear after an update.
BARE_WHY = re.compile(r"^\W*(?:but\s+|and\s+|so\s+)?(?:why|how\s+come|what\s+happened|whats?\s+wrong)\W*$", re.I)


def as_reply_to_update(tracker: Tracker) -> List[EventType]:
    """"why?" right after a proactive update asks why about that order: read again as a delay question."""
    text = (tracker.latest_message or {}).get("text") or ""
    if not (last_response(tracker) or "").startswith("utter_update_") or not BARE_WHY.match(text):
        return []
    parse = {**(tracker.latest_message or {}), "intent": {"name": "delivery_delay", "confidence": 1.0}}
    return [UserUtteranceReverted(), ActionExecuted("action_listen"),
            UserUttered(text, parse_data=parse, input_channel=tracker.get_latest_input_channel())]


def last_bot_text(tracker: Tracker) -> str:
    for event in reversed(tracker.events):
        if event.get("event") == "bot":
            return event.get("text") or ""
    return ""


class ActionAffirm(Action):
    """A bare "yes": accepts the offer of a person if that was the question, else shows the menu."""

    def name(self) -> Text:
        return "action_affirm"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        offer = _offer_text(domain)
        if offer and last_bot_text(tracker) == offer:
            return await ActionHandoff().run(dispatcher, tracker, domain)
        if last_response(tracker) == "utter_offer_updates":
            return await ActionSubscribeUpdates().run(dispatcher, tracker, domain)
        dispatcher.utter_message(response="utter_menu")
        return []


class ActionExplainQuestion(Action):
    """Help with the question a form is asking ("help", "what?"), or a way on without its answer ("I don't know").

    The rules run it when the form reads no answer from the message, then
    return to the form, which does not ask the same question straight after.
    A "no" to the offer of finding the order by email and postcode leaves the
    shopper to send the number when they find it.
    """

    def name(self) -> Text:
        return "action_explain_question"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        intent = latest_intent(tracker)
        if intent == "deny" and last_response(tracker) in LOOKUP_OFFERS:
            dispatcher.utter_message(response="utter_no_lookup")
            return []
        if not tracker.active_loop_name and not tracker.get_slot("requested_slot"):
            # Outside a question, what a shopper doesn't know here is their order number, if they say so.
            text = tracker.latest_message.get("text") or ""
            knows_not_number = intent == "dont_know" and re.search(r"\b(order|number|no\.?|nr)\b", text, re.I)
            dispatcher.utter_message(response="utter_no_order_number" if knows_not_number else "utter_menu")
            return []
        result = explain(dispatcher, tracker, "ask_help" if intent == "ask_help" else "dont_know")
        return [SlotSet(name, value) for name, value in result.items()]
