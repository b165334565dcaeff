"""Collecting and applying a new delivery address."""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.common import latest_intent, now, polite_failure, settings, store
from actions.jobs import ADDRESS_SLOTS
from bot import address
from bot.store import get_order


def _proposed(tracker: Tracker, name: str) -> Dict[str, str]:
    return address.new_address(street=tracker.get_slot("new_street") or "", city=tracker.get_slot("new_city") or "",
                               postcode=tracker.get_slot("new_postcode") or "",
                               country=tracker.get_slot("new_country") or "", name=name)


class ValidateAddressForm(FormValidationAction):
    """Each part checked as it comes; the whole address checked against the country's rules."""

    def name(self) -> Text:
        return "validate_address_form"

    def validate_new_street(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                            domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = value.strip()
        if len(text) < 3 or len(text) > 200 or not any(c.isalpha() for c in text):
            dispatcher.utter_message(text="Please give the street and house number, e.g. Keizersgracht 112.")
            return {"new_street": None}
        return {"new_street": text}

    def validate_new_city(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if len(text) < 2 or len(text) > 120 or any(c.isdigit() for c in text):
            dispatcher.utter_message(text="That doesn't look like a town name. Which town or city?")
            return {"new_city": None}
        return {"new_city": text}

    def validate_new_postcode(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if not 2 <= len(text) <= 12:
            dispatcher.utter_message(text="That doesn't look like a postcode. What's the postcode?")
            return {"new_postcode": None}
        return {"new_postcode": text}

    def validate_new_country(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        problems = address.validate_address(street=tracker.get_slot("new_street") or "",
                                            city=tracker.get_slot("new_city") or "",
                                            postcode=tracker.get_slot("new_postcode") or "", country=value or "")
        if "country" in problems:
            dispatcher.utter_message(text=problems["country"])
            return {"new_country": None}
        if problems:
            for problem in problems.values():
                dispatcher.utter_message(text=problem)
            fields = {"postcode": "new_postcode", "city": "new_city", "street": "new_street"}
            return {"new_country": value, **{fields[f]: None for f in problems if f in fields}}
        return {"new_country": value}

    async def extract_address_confirmed(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                        domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "address_confirmed":
            return {}
        intent = latest_intent(tracker)
        if intent == "affirm":
            return {"address_confirmed": True}
        if intent == "deny":
            return {"address_confirmed": False}
        return {}

    def validate_address_confirmed(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        if value:
            return {"address_confirmed": True}
        dispatcher.utter_message(response="utter_address_not_confirmed")
        return {slot: None for slot in ADDRESS_SLOTS}


class ActionAskAddressConfirmed(Action):
    """Shows the old and the new address side by side before anything is written."""

    def name(self) -> Text:
        return "action_ask_address_confirmed"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        with store() as session:
            order = get_order(session=session, number=tracker.get_slot("verified_order") or "")
            old = address.describe(address.current_address(order)) if order else "?"
            name = order.ship_name if order else ""
        new = _proposed(tracker, name)
        dispatcher.utter_message(
            text=f"Please check: change the delivery address from {old} to "
                 f"{new['line1']}, {new['postcode']} {new['city']}, {new['country']}?",
            buttons=[{"title": "Yes, change it", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}])
        return []


class ActionSubmitAddress(Action):
    """Writes the change (before shipment) or asks the carrier to redirect (after)."""

    def name(self) -> Text:
        return "action_submit_address"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        reset = [SlotSet(slot, None) for slot in ADDRESS_SLOTS]
        number = tracker.get_slot("verified_order")
        if not tracker.get_slot("address_confirmed") or not number:
            return reset
        config, moment = settings(), now()
        with store() as session:
            order = get_order(session=session, number=number)
            mode = address.change_mode(order, config, moment)
            new = _proposed(tracker, order.ship_name)
            if mode.kind == address.IMPOSSIBLE:
                dispatcher.utter_message(text=mode.explanation)
                dispatcher.utter_message(response="utter_offer_human")
                return reset + [SlotSet("handoff_reason", "address_impossible")]
            address.apply_change(session=session, order=order, mode=mode.kind, address=new,
                                 conversation_id=tracker.sender_id, now=moment)
        if mode.kind == address.DIRECT:
            dispatcher.utter_message(text=f"Done: order {number} will go to {new['line1']}, {new['postcode']} "
                                          f"{new['city']}. You'll get a confirmation email.")
        else:
            dispatcher.utter_message(text=f"I've asked the carrier to redirect order {number} to {new['line1']}, "
                                          f"{new['postcode']} {new['city']}. Redirects usually take effect within "
                                          "a business day; the tracking link will show the new address.")
        dispatcher.utter_message(response="utter_anything_else")
        return reset
