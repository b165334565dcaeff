"""Collecting and applying a new delivery address."""

from __future__ import annotations

from typing import Any, Dict, List, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import latest_intent, polite_failure, still_verified
from actions.context import context
from actions.jobs import ADDRESS_SLOTS, Reply
from bot.domain.enums import AddressMode, ClaimReason, HandoffReason
from bot.services import address
from bot.store.queries import get_order

#: The response for each kind of problem with a field of the new address.
PROBLEM_RESPONSES = {
    address.UNKNOWN_COUNTRY: "utter_invalid_country",
    address.INVALID: "utter_address_field_invalid",
    address.REQUIRED: "utter_address_field_missing",
}


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
            dispatcher.utter_message(response="utter_invalid_street")
            return {"new_street": None}
        return {"new_street": text}

    def validate_new_city(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if len(text) < 2 or len(text) > 120 or any(c.isdigit() for c in text):
            dispatcher.utter_message(response="utter_invalid_city")
            return {"new_city": None}
        return {"new_city": text}

    def validate_new_postcode(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if not 2 <= len(text) <= 12:
            dispatcher.utter_message(response="utter_invalid_postcode")
            return {"new_postcode": None}
        return {"new_postcode": text}

    def validate_new_country(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        problems = address.validate_address(street=tracker.get_slot("new_street") or "",
                                            city=tracker.get_slot("new_city") or "",
                                            postcode=tracker.get_slot("new_postcode") or "", country=value or "")
        country = address.country_code(value or "") or str(value)
        if "country" in problems:
            dispatcher.utter_message(response=PROBLEM_RESPONSES[problems["country"]], field="country",
                                     country=country)
            return {"new_country": None}
        if problems:
            for name, problem in problems.items():
                dispatcher.utter_message(response=PROBLEM_RESPONSES[problem], field=name, country=country)
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
        number = tracker.get_slot("verified_order") or ""

        def current(session: Session) -> tuple:
            if not still_verified(session, tracker.sender_id, number):
                return ("?", "")
            order = get_order(session=session, number=number)
            return (address.describe(address.current_address(order)), order.ship_name) if order else ("?", "")

        old, name = await context().store(current)
        new = _proposed(tracker, name)
        dispatcher.utter_message(response="utter_confirm_address", old=old,
                                 new=f"{new['line1']}, {new['postcode']} {new['city']}, {new['country']}")
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
        ctx = context()

        def submit(session: Session) -> Reply:
            if not still_verified(session, tracker.sender_id, number):
                return Reply.unproven()
            order = get_order(session=session, number=number)
            if order is None:
                raise LookupError(f"verified order {number} disappeared")
            mode = address.change_mode(order, ctx.settings, ctx.now())
            new = _proposed(tracker, order.ship_name)
            reply = Reply()
            if mode.kind == AddressMode.IMPOSSIBLE:
                reply.say(mode.response, address=address.describe(address.current_address(order)), **mode.wording)
                reply.say("utter_offer_human")
                reply.events.append(SlotSet("handoff_reason", HandoffReason.ADDRESS_IMPOSSIBLE.value))
                return reply
            address.apply_change(session=session, order=order, mode=mode.kind, address=new,
                                 conversation_id=tracker.sender_id, now=ctx.now())
            where = f"{new['line1']}, {new['postcode']} {new['city']}"
            reply.say("utter_address_changed" if mode.kind == AddressMode.DIRECT else "utter_redirect_requested",
                      number=number, address=where)
            if mode.resend:  # it came back to us: now a replacement to the new address, or a refund
                reply.events.append(SlotSet("claim_reason", ClaimReason.NOT_RECEIVED.value))
                return reply.say("utter_offer_claim")
            return reply.say("utter_anything_else")

        reply = await ctx.store(submit)
        reply.send(dispatcher)
        return reset + reply.events
