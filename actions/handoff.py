"""Handing over to a person, and noticing when the assistant keeps misunderstanding."""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.common import polite_failure
from actions.jobs import hand_off


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
        reason = "not_understood" if consecutive_fallbacks(tracker) >= 2 else "asked"
        hand_off(dispatcher, tracker, reason)
        return []


class ActionFallback(Action):
    """Asks to rephrase once; the second miss in a row offers a person."""

    def name(self) -> Text:
        return "action_fallback"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        if consecutive_fallbacks(tracker) >= 2:
            dispatcher.utter_message(text="Sorry, I'm still not getting it.")
            dispatcher.utter_message(response="utter_offer_human")
        else:
            dispatcher.utter_message(response="utter_default")
            dispatcher.utter_message(response="utter_menu")
        return []


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
        offer = domain.get("responses", {}).get("utter_offer_human", [{}])[0].get("text", "")
        if offer and last_bot_text(tracker) == offer:
            return await ActionHandoff().run(dispatcher, tracker, domain)
        dispatcher.utter_message(response="utter_menu")
        return []
