"""Collecting and applying a new delivery address."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Text, Tuple

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.common import (
    ANSWERED_FOR_THE_QUESTION,
    DIGRESSIONS,
    LEAVING,
    PAUSING,
    AskQuestion,
    answering,
    explain,
    latest_intent,
    latest_text,
    missed,
    polite_failure,
    reads_as,
    said_since_message,
    still_verified,
)
from actions.context import context
from actions.jobs import ADDRESS_SLOTS, Reply, continue_job
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


#: The form's slot for each part of the address, in the order the form asks for them.
PART_SLOTS = {"street": "new_street", "city": "new_city", "postcode": "new_postcode", "country": "new_country"}
FIELDS = {slot: part for part, slot in PART_SLOTS.items()}


class ValidateAddressForm(FormValidationAction):
    """Each part checked as it comes; the whole address checked against the country's rules.

    A whole address pasted in one line fills every part it names.  An answer
    that is a refusal ("no, I don't want to change it", "I'm just asking")
    leaves the form with nothing changed; a question ("what?", "what address is
    it going to?") is answered and the form goes on; neither is ever stored as
    a part of the address.  Ways out the model recognises ("stop", "a person",
    "help") are left to the rules.
    """

    def name(self) -> Text:
        return "validate_address_form"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        asked = tracker.get_slot("requested_slot")
        if answering(tracker) and (asked in FIELDS or asked == "address_confirmed"):
            early = await self._not_an_answer(dispatcher, tracker, asked)
            if early is not None:
                return early
        given: List[EventType] = []
        line = tracker.get_slot("address_in_request")
        if line and not answering(tracker):
            # The form starts with the new address the request named ("change it to ..."): checked like an answer.
            parts = address.parse_address(line)
            given = [SlotSet("address_in_request", None)]
            tracker.add_slots([SlotSet(slot, getattr(parts, part)) for part, slot in PART_SLOTS.items()
                               if getattr(parts, part)])
        return given + await super().run(dispatcher, tracker, domain)

    async def _not_an_answer(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                             asked: str) -> Optional[List[EventType]]:
        """A refusal or a question where a part of the address was asked for: the events that handle it, else None."""
        intent, text = latest_intent(tracker), _typed(tracker)
        if intent in LEAVING | DIGRESSIONS or (intent in PAUSING and asked != "address_confirmed"):
            return None  # the rules answer it
        if asked in FIELDS and address.keeps_address(text):
            return await _keep_and_resend(dispatcher, tracker)
        reading = address.read_answer(text, FIELDS.get(asked, "street"))
        if reading.kind == address.REFUSAL:
            dispatcher.utter_message(response="utter_address_kept")
            return [SlotSet(slot, None) for slot in ADDRESS_SLOTS] + [SlotSet("requested_slot", None)]
        if asked == "address_confirmed":
            if intent in PAUSING | {"affirm"} or (reading.kind == address.ADDRESS and reading.parts.street):
                return None  # yes, no, or a corrected address
            kind = reads_as(text) or "ask_help"
            return [SlotSet(k, v) for k, v in explain(dispatcher, tracker, kind).items()] + \
                [SlotSet("requested_slot", asked)]
        if reading.kind != address.QUESTION:
            return None
        if reading.asks_current:
            shown = await _show_current(dispatcher, tracker, "utter_current_address")
            return shown + [SlotSet(asked, None), SlotSet("requested_slot", asked)]
        kind = reads_as(text) or "ask_help"
        return [SlotSet(k, v) for k, v in explain(dispatcher, tracker, kind).items()] + \
            [SlotSet("requested_slot", asked)]

    async def get_extraction_events(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> List[EventType]:
        asked = tracker.get_slot("requested_slot")
        if not answering(tracker) or not (asked in FIELDS or asked == "address_confirmed"):
            return []
        intent, text = latest_intent(tracker), _typed(tracker)
        if intent in LEAVING | DIGRESSIONS:
            return []
        parts = address.parse_address(text, asked=FIELDS.get(asked, "street")) if text else address.AddressParts()
        whole = address.address_in_request(text) if text else address.AddressParts()
        if whole.street and (not parts.street or len(whole.street) < len(parts.street)):
            parts = whole  # "i already told you!! Friedrichstraße 100, 10117 Berlin": the address after the words
        if parts and (asked in FIELDS or parts.street):
            # Every part the message names; a new street at the confirmation is a corrected address.
            found = {"new_street": parts.street, "new_city": parts.city, "new_postcode": parts.postcode,
                     "new_country": parts.country}
            events = [SlotSet(slot, value) for slot, value in found.items() if value]
            return events + ([SlotSet("address_confirmed", None)] if asked == "address_confirmed" else [])
        if asked == "address_confirmed":
            if intent == "affirm":
                return [SlotSet("address_confirmed", True)]
            if intent == "deny":
                return [SlotSet("address_confirmed", False)]
            return []
        if intent in PAUSING:
            return []  # "no", "I don't know", "help": the rules answer it
        return [SlotSet(asked, "")]  # typed, but no part of an address: say so

    def validate_new_street(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                            domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = value.strip()
        if len(text) < 3 or len(text) > 200 or not any(c.isalpha() for c in text):
            return missed(dispatcher, tracker, "new_street", "utter_invalid_street")
        return {"new_street": text, "failed_answers": 0}

    def validate_new_city(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if len(text) < 2 or len(text) > 120 or any(c.isdigit() for c in text):
            return missed(dispatcher, tracker, "new_city", "utter_invalid_city")
        return {"new_city": text, "failed_answers": 0}

    def validate_new_postcode(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        text = (value or "").strip()
        if not 2 <= len(text) <= 12 or not any(c.isdigit() for c in text):
            return missed(dispatcher, tracker, "new_postcode", "utter_invalid_postcode")
        return {"new_postcode": text, "failed_answers": 0}

    def validate_new_country(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        problems = address.validate_address(street=tracker.get_slot("new_street") or "",
                                            city=tracker.get_slot("new_city") or "",
                                            postcode=tracker.get_slot("new_postcode") or "", country=value or "")
        country = address.country_code(value or "") or str(value)
        if "country" in problems:
            return missed(dispatcher, tracker, "new_country", PROBLEM_RESPONSES[problems["country"]],
                          field="country", country=country)
        if problems:
            for name, problem in problems.items():
                dispatcher.utter_message(response=PROBLEM_RESPONSES[problem], field=name, country=country)
            fields = {"postcode": "new_postcode", "city": "new_city", "street": "new_street"}
            return {"new_country": value, **{fields[f]: None for f in problems if f in fields}}
        return {"new_country": value, "failed_answers": 0}

    def validate_address_confirmed(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                   domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value is None:  # cleared, not answered
            return {}
        if value:
            return {"address_confirmed": True}
        dispatcher.utter_message(response="utter_address_not_confirmed")
        return {slot: None for slot in ADDRESS_SLOTS}


def _typed(tracker: Tracker) -> str:
    text = latest_text(tracker)
    return "" if text.startswith("/") else text


async def _show_current(dispatcher: CollectingDispatcher, tracker: Tracker, response: str) -> List[EventType]:
    """Tell the shopper where their verified order is going now, masked, with `response`."""
    number = tracker.get_slot("verified_order") or ""

    def current(session: Session) -> Optional[str]:
        if not still_verified(session, tracker.sender_id, number):
            return None
        order = get_order(session=session, number=number)
        return address.describe(address.current_address(order)) if order else None

    where = await context().store(current)
    if where is None:
        reply = Reply.unproven()
        reply.send(dispatcher)
        return reply.events
    dispatcher.utter_message(response=response, number=number, address=where)
    return []


async def _keep_and_resend(dispatcher: CollectingDispatcher, tracker: Tracker) -> List[EventType]:
    """"Same address, just resend it": the form ends with nothing changed; a parcel sent back is offered again."""
    number = tracker.get_slot("verified_order") or ""
    ctx = context()

    def returned(session: Session) -> Optional[Tuple[str, str]]:
        if not still_verified(session, tracker.sender_id, number):
            return None
        order = get_order(session=session, number=number)
        reason = address.sent_back(order, ctx.settings, ctx.now()) if order is not None else None
        if order is None or reason is None:
            return None
        return reason, address.describe(address.current_address(order))

    sent_back = await ctx.store(returned)
    events: List[EventType] = [SlotSet(slot, None) for slot in ADDRESS_SLOTS] + [SlotSet("requested_slot", None)]
    if sent_back:
        reason, where = sent_back
        dispatcher.utter_message(response="utter_address_kept_resend", number=number, reason=reason, address=where)
        dispatcher.utter_message(response="utter_offer_claim")
        return events + [SlotSet("claim_reason", ClaimReason.NOT_RECEIVED.value)]
    dispatcher.utter_message(response="utter_address_kept")
    return events


class ActionShowAddress(Action):
    """"What address is it going to?": the delivery address, masked, and no change started.

    In the middle of a form the form then goes on; on its own, the shopper is
    offered the change.
    """

    def name(self) -> Text:
        return "action_show_address"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        if (tracker.active_loop or {}).get("name"):
            return await _show_current(dispatcher, tracker, "utter_current_address")
        if tracker.get_slot("locked_out") or not tracker.get_slot("verified_order"):
            return await continue_job(dispatcher, tracker)  # locked out: offer a person; no check: nothing to say
        events = await _show_current(dispatcher, tracker, "utter_delivery_address")
        if not events:
            dispatcher.utter_message(response="utter_offer_address_change")
        return events


class ActionAskNewStreet(AskQuestion):
    slot = "new_street"


class ActionAskNewCity(AskQuestion):
    slot = "new_city"


class ActionAskNewPostcode(AskQuestion):
    slot = "new_postcode"


class ActionAskNewCountry(AskQuestion):
    slot = "new_country"


class ActionAskAddressConfirmed(Action):
    """Shows the old and the new address side by side before anything is written."""

    def name(self) -> Text:
        return "action_ask_address_confirmed"

    @polite_failure
    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[EventType]:
        if said_since_message(tracker, ANSWERED_FOR_THE_QUESTION):
            return []  # the help just given ends with the same choice
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
